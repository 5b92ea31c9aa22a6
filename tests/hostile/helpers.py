"""What every hostile case must come to: one ``error:`` line and exit code 2, never a traceback."""

from __future__ import annotations

from typer.testing import CliRunner

from app.cli import app


def cli(*args: str) -> tuple[int, str]:
    """Run ``workbench ARGS`` in-process; returns (exit code, stdout+stderr)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def assert_one_line_error(args, *expected: str) -> str:
    """The command exits 2 with a single ``error:`` line containing every ``expected`` fragment."""
    code, output = cli(*args)
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in output, output
    for fragment in expected:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]
