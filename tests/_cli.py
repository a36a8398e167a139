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


def one_line_error(capsys, *args) -> str:
    """The one `error: ...` line a bad `tokenstack ARGS` prints (exit status 2, no traceback, no output)."""
    code, out, err = tokenstack(capsys, *args)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and out == ""
    return lines[0]
