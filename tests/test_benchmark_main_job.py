"""benchmarks/main_job.py: the example's own arguments after ``--`` (``--out`` included) reach it, and the
figures are read from where the example wrote them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def bench():
    spec = importlib.util.spec_from_file_location("main_job_benchmark", ROOT / "benchmarks" / "main_job.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_example(calls):
    """A stand-in for the example's process: writes evaluation.json where argparse would put it (the last --out)."""

    def run(cmd, **kw):
        args = cmd[2:]
        out = [args[k + 1] for k, a in enumerate(args) if a == "--out"][-1]
        out = [a[len("--out="):] for a in args if a.startswith("--out=")][-1:] or [out]
        Path(out[0]).mkdir(parents=True, exist_ok=True)
        ev = {"seconds": {"phases": {"fit": {"wall": 1.0, "cpu": 1.5}}}, "eigenvalues": {"mae_meV": 12.5}}
        (Path(out[0]) / "evaluation.json").write_text(json.dumps(ev))
        calls.append(args)
        return subprocess.CompletedProcess(cmd, 0, stdout="done\n", stderr="")

    return run


@pytest.mark.parametrize("form", [["--out", "{d}"], ["--out={d}"], ["--threads", "1", "--out", "{d}", "--full"]])
def test_out_after_the_double_dash_is_where_the_results_are_read(bench, tmp_path, monkeypatch, capsys, form):
    calls = []
    monkeypatch.setattr(bench.subprocess, "run", _fake_example(calls))
    d = tmp_path / "mine"
    extra = [a.format(d=d) for a in form]
    assert bench.main(["--json", "--repeat", "2", "--", *extra]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["eig_mae_meV"] for r in report["runs"]] == [12.5, 12.5]
    assert (d / "evaluation.json").exists()
    for args in calls:  # one --out, the user's; the other arguments passed through in order
        outs = [a for a in args if a == "--out" or a.startswith("--out=")]
        assert len(outs) == 1 and args[args.index("--out") + 1] == str(d.resolve())
        assert args[2:] == ["-q", *[a for a in extra if a not in ("--out", str(d)) and not a.startswith("--out=")]]


def test_out_after_the_double_dash_without_a_directory_is_refused(bench):
    with pytest.raises(SystemExit, match="needs a directory"):
        bench.main(["--", "--out"])


def test_machine_cpu_seconds_grow_with_work(bench):
    """The machine's busy/idle/steal seconds (what else ran beside the job) are read and only grow."""
    a = bench.machine_cpu_seconds()
    if not a:
        pytest.skip("no /proc/stat on this system")
    x = sum(i * i for i in range(300_000))
    b = bench.machine_cpu_seconds()
    assert x > 0 and set(a) == {"busy", "idle", "steal"}
    assert all(b[k] >= a[k] >= 0 for k in a)
