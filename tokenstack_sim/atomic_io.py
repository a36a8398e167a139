"""The one atomic-write helper: every result file of the project is written through it.

`atomic_write` opens a temporary file in the target folder, yields it, and on success renames it over
the target. ``mkstemp`` creates the file with mode 0600, which a rename keeps, so the file is given the
mode a plain ``open`` would have (``0o666 & ~umask``) before the rename. On any error the temporary
file is removed and the target is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _current_umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", suffix: str = ".tmp", encoding: str | None = None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
        os.chmod(tmp_name, 0o666 & ~_current_umask())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
