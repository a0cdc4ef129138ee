"""The README main job (``examples/si_hamiltonian.py``): wall and CPU time, phase by phase, with the load.

Runs the job as the README does, in a child process, and prints its wall time, its CPU time (all
threads), its peak memory, the machine's load average before and after, and the wall/CPU split of
its phases (imports, reading, fit, error-bar calibration, save/load, predictions, evaluation,
figures; from ``evaluation.json["seconds"]``).  The project's target is <= 30 s wall after install
on the 2-core development machine, idle.

``--fresh`` measures what a new user meets: ``git clone`` of this repository's committed state into
a temporary folder, ``python3 -m venv``, ``pip install -e .`` (timed separately), then the job.

Usage::

    python benchmarks/main_job.py [--fresh] [--repeat N] [--json] [-- extra arguments of the example]

An ``--out DIR`` among the example's arguments is where its outputs go (and are read from; each run
replaces them); without one they go to a temporary folder.

Examples
--------
>>> phase_table({"phases": {"fit": {"wall": 2.0, "cpu": 3.0}}})
['  fit                                2.0 s wall     3.0 s CPU']
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def split_out(extra: list) -> tuple:
    """``(out, rest)``: the example's ``--out DIR`` / ``--out=DIR`` among the arguments after ``--``
    (None when absent; the last one wins, as argparse takes it) and the other arguments.

    The job's results are read from ``out/evaluation.json``: an ``--out`` passed through to the
    example must be where they are read from, not a second directory the benchmark never looks at.

    Examples
    --------
    >>> split_out(["--threads", "1", "--out", "x", "--out=y"])
    ('y', ['--threads', '1'])
    >>> split_out(["--full"])
    (None, ['--full'])
    """
    out, rest, k = None, [], 0
    while k < len(extra):
        a = extra[k]
        if a == "--out":
            if k + 1 >= len(extra):
                raise SystemExit("main_job.py: --out after -- needs a directory")
            out, k = extra[k + 1], k + 2
            continue
        if a.startswith("--out="):
            out = a[len("--out="):]
        else:
            rest.append(a)
        k += 1
    return out, rest


def machine_cpu_seconds() -> dict:
    """The machine's CPU seconds so far by kind (``/proc/stat``: ``busy`` user + nice + system + irq,
    ``idle``, ``steal`` taken by the hypervisor), all cores together; ``{}`` where there is no ``/proc/stat``.

    Between two calls they say what else ran beside the job: a swing of the job's wall time on an
    "idle" machine with ``busy`` well above the job's own CPU time, or with ``steal`` > 0, is the
    machine's, not the job's.
    """
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return {}
    if not fields or fields[0] != "cpu":
        return {}
    v = [int(x) for x in fields[1:]] + [0] * 8
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return {"busy": (user + nice + system + irq + softirq) / hz, "idle": (idle + iowait) / hz, "steal": steal / hz}


def run_job(python: str, repo: Path, out: Path, extra: list) -> dict:
    """Run the example once in a child process; its wall, CPU (children's user + system), peak RSS, page
    faults and context switches, and the machine's busy/idle/steal CPU seconds over the run
    (:func:`machine_cpu_seconds`: what else was running)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()
    m0 = machine_cpu_seconds()
    t = time.perf_counter()
    proc = subprocess.run([python, str(repo / "examples" / "si_hamiltonian.py"), "--out", str(out), "-q", *extra],
                          cwd=repo, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m1 = machine_cpu_seconds()
    if proc.returncode != 0:
        raise RuntimeError(f"the main job failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    ev = json.loads((out / "evaluation.json").read_text())
    return {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_rss_GB": after.ru_maxrss / 2**20, "load_before": list(load0), "load_after": list(os.getloadavg()),
            "seconds": ev.get("seconds", {}), "eig_mae_meV": ev["eigenvalues"]["mae_meV"],
            "minor_faults": after.ru_minflt - before.ru_minflt,
            "involuntary_switches": after.ru_nivcsw - before.ru_nivcsw,
            "machine_cpu_s": {k: m1[k] - m0[k] for k in m0} if m0 and m1 else {},
            "last_line": proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""}


def fresh_install(work: Path) -> tuple:
    """Clone the committed state of this repository into ``work`` and install it in a new venv.

    Returns
    -------
    python : str
        The new environment's interpreter.
    repo : Path
    install : dict
        Wall and CPU seconds of clone + venv + ``pip install -e .``.
    """
    repo = work / "acehamil"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(repo / ".venv")], check=True)
    python = str(repo / ".venv" / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "-e", str(repo)], check=True, cwd=repo)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return python, repo, {"wall_s": time.perf_counter() - t, "cpu_s": cpu}


def phase_table(seconds: dict) -> list:
    """Lines ``name  wall  CPU`` of ``evaluation.json["seconds"]["phases"]``."""
    return [f"  {name:<30}{t['wall']:>8.1f} s wall {t['cpu']:>7.1f} s CPU" for name, t in seconds.get("phases", {}).items()]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fresh", action="store_true", help="clone + new venv + pip install -e . first (timed apart)")
    p.add_argument("--repeat", type=int, default=1, help="runs of the job (each reported)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    user_out, extra = split_out(extra)
    report = {"cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="acehamil_main_job_") as tmp:
        python, repo = sys.executable, ROOT
        if args.fresh:
            python, repo, report["install"] = fresh_install(Path(tmp))
        for r in range(args.repeat):
            out = Path(tmp) / f"out{r}" if user_out is None else Path(user_out).resolve()
            report["runs"].append(run_job(python, repo, out, extra))
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    if "install" in report:
        print(f"fresh clone + venv + pip install -e .: {report['install']['wall_s']:.0f} s wall, "
              f"{report['install']['cpu_s']:.0f} s CPU")
    for r, run in enumerate(report["runs"]):
        print(f"run {r}: {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU, peak {run['peak_rss_GB']:.2f} GB, "
              f"load {run['load_before'][0]:.1f} -> {run['load_after'][0]:.1f} ({report['cores']} cores); "
              f"held-out eigenvalue MAE {run['eig_mae_meV']:.2f} meV")
        m = run.get("machine_cpu_s") or {}
        if m:
            print(f"  machine over the run: {m['busy']:.1f} s busy CPU (the job {run['cpu_s']:.1f}), {m['idle']:.1f} s idle, "
                  f"{m['steal']:.1f} s stolen by the hypervisor; the job: {run['minor_faults']} minor page faults, "
                  f"{run['involuntary_switches']} involuntary context switches")
        print("\n".join(phase_table(run["seconds"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
