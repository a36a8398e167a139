"""Run the `tokenstack` CLI in process for tests: (exit status, stdout, stderr)."""

from tokenstack_sim.cli import main


def tokenstack(capsys, *args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `tokenstack ARGS`, in process."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
