"""benchmarks/mlearn.py finds the shared data from a git worktree: its default was ``ROOT.parent/shared/data``,
which inside the worktree /work/wt/NAME named /work/wt/shared/data (absent) while the data lie in /work/shared/data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import mlearn  # noqa: E402


def _git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(cwd)})


def test_data_found_from_a_worktree_two_levels_down(tmp_path, monkeypatch):
    monkeypatch.delenv("ACEHAMIL_SHARED_DATA", raising=False)
    (tmp_path / "shared" / "data" / "mlearn").mkdir(parents=True)
    wt = tmp_path / "wt" / "name"
    wt.mkdir(parents=True)
    assert mlearn.shared_data_dir(wt) == tmp_path / "shared" / "data"


def test_data_found_beside_the_main_checkout_of_a_worktree_elsewhere(tmp_path, monkeypatch):
    monkeypatch.delenv("ACEHAMIL_SHARED_DATA", raising=False)
    main, elsewhere = tmp_path / "proj" / "main", tmp_path / "scratch"
    (tmp_path / "proj" / "shared" / "data").mkdir(parents=True)
    main.mkdir(parents=True)
    elsewhere.mkdir()
    _git("init", "-q", cwd=main)
    _git("commit", "-q", "--allow-empty", "-m", "x", cwd=main)
    _git("worktree", "add", "-q", str(elsewhere / "wt"), cwd=main)
    assert mlearn.shared_data_dir(elsewhere / "wt") == tmp_path / "proj" / "shared" / "data"


def test_environment_wins_and_absent_data_fail_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACEHAMIL_SHARED_DATA", str(tmp_path / "mine"))
    assert mlearn.shared_data_dir(tmp_path) == tmp_path / "mine"
    assert mlearn.main(["--data", str(tmp_path / "none"), "--elements", "Si"]) == 2
    assert "give --data DIR or set ACEHAMIL_SHARED_DATA" in capsys.readouterr().err
