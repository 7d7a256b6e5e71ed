"""Running the command line inside a test and checking its one-line errors."""

import signal
import sys

from hlrm.cli import main


def interruptible() -> None:
    """``preexec_fn`` of a console-script subprocess that a test stops with Ctrl-C (SIGINT):
    a shell starts background jobs with SIGINT ignored and children inherit that, so a test
    suite launched with ``&`` would otherwise see Ctrl-C do nothing. Python installs its
    KeyboardInterrupt handler only when SIGINT is not ignored at start-up."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["hlrm", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
