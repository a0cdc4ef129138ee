"""`acehamil demo` runs, passes its own checks and reports what it measured."""

from __future__ import annotations

import pytest

from acehamil.cli import main


def test_demo_runs_and_checks(capsys):
    assert main(["demo", "--reps", "1"]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out
    assert "equivariance" in out and "features per (L, parity)" in out


def test_demo_rejects_bad_reps(capsys):
    assert main(["demo", "--reps", "0"]) == 2
    assert "--reps" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["demo", "--help"]])
def test_demo_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "bulk Si" in capsys.readouterr().out
