"""The one error type for bad user input.

Every malformed config, override, trace or spec raises `InputError` with the file, the place in it
(a key path such as ``dram.timing.nRCD`` or ``line 17``) and what was expected. The CLI prints it on
one line and exits with status 2; it never shows a traceback for bad input.
"""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad user input, located by file and by key path or line."""

    def __init__(self, message: str, *, source: str | Path | None = None, where: str | None = None):
        self.message = message
        self.source = str(source) if source is not None else None
        self.where = where
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [p for p in (self.source, self.where) if p]
        prefix = ": ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message

    def located(self, *, source: str | Path | None = None, where_prefix: str | None = None) -> "InputError":
        """Return a copy that also names the file and/or a parent key path."""
        where = self.where
        if where_prefix:
            where = f"{where_prefix}.{where}" if where else where_prefix
        return InputError(self.message, source=source if source is not None else self.source, where=where)
