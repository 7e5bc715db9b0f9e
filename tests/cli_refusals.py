"""What every test of a refused command checks: exit code 2 and one line ``error: ...``.

Shared by test_cli.py, test_user_mistakes.py and test_run_safety.py.
"""
from tinyalexnet.cli import main


def one_line_error(code, err, *expected):
    """Exit code 2 and stderr one line ``error: ...`` holding each ``expected``; the line."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def user_error(args, capsys, *expected):
    """main(args) must refuse as :func:`one_line_error` says; returns (stdout, the line)."""
    try:
        code = main(args)
    except SystemExit as exit:          # argparse refuses before main's own handling
        code = exit.code
    out, err = capsys.readouterr()
    assert code == 2, (args, out, err)
    return out, one_line_error(code, err, *expected)
