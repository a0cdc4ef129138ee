"""Thread control: the context manager, the CLI option, the library's one-thread default in hot loops."""

from __future__ import annotations

import pytest

from acehamil.cli import main
from acehamil.threads import blas_threads, inner_threads, limit_threads, requested_threads, threads_from_env


def _record(store):
    def run(args):
        store.append((blas_threads(), requested_threads()))
        return 0

    return run


@pytest.mark.parametrize("argv", [["--threads", "1", "info", "x.h5"], ["info", "x.h5", "--threads", "1"]])
def test_cli_threads_option_is_honoured(monkeypatch, argv):
    import acehamil.cli.info as info

    seen = []
    monkeypatch.setattr(info, "run", _record(seen))
    assert main(argv) == 0
    (counts, requested) = seen[0]
    assert counts and all(n == 1 for n in counts), counts
    assert requested == 1
    assert requested_threads() is None  # restored after the command


def test_env_default_and_bad_values(monkeypatch, capsys):
    assert threads_from_env({}) is None
    assert threads_from_env({"ACEHAMIL_THREADS": "3"}) == 3
    with pytest.raises(ValueError, match="ACEHAMIL_THREADS"):
        threads_from_env({"ACEHAMIL_THREADS": "many"})
    with pytest.raises(SystemExit):
        main(["--threads", "0", "info", "x.h5"])
    assert "positive integer" in capsys.readouterr().err
    with pytest.raises(TypeError):
        with limit_threads(1.5):
            pass


def test_inner_threads_default_one_and_follows_the_request():
    with inner_threads():
        assert set(blas_threads()) == {1}
    with limit_threads(2):
        outer = blas_threads()  # 2, or fewer where a library's pool was built smaller (OPENBLAS_NUM_THREADS)
        assert max(outer) <= 2
        with inner_threads():
            assert blas_threads() == outer
    with limit_threads(None):
        assert requested_threads() is None


def test_negative_slice_values_are_accepted():
    from acehamil.cli import _join_negative_values, build_parser

    argv = _join_negative_values(["predict", "m.h5", "s.h5", "-o", "p.h5", "--index", "-6:"])
    args = build_parser().parse_args(argv)
    assert args.index == "-6:"
    assert _join_negative_values(["--emin", "-3"]) == ["--emin", "-3"]


def test_limits_list_the_libraries_once_per_set_of_modules(monkeypatch):
    """inner_threads / limit_threads reuse one threadpoolctl controller (each new one reads /proc/self/maps;
    the README job built ~100) until a module is imported; the limits are still set and restored."""
    import sys
    import types

    import threadpoolctl

    built = []
    init = threadpoolctl.ThreadpoolController.__init__

    def counting(self, *a, **k):
        built.append(1)
        init(self, *a, **k)

    monkeypatch.setattr(threadpoolctl.ThreadpoolController, "__init__", counting)
    with inner_threads():
        pass
    before = blas_threads()
    n0 = len(built)
    for _ in range(5):
        with inner_threads():
            assert set(blas_threads()) == {1}
        with limit_threads(2):
            with inner_threads():
                pass
    # blas_threads() itself builds one per call (threadpool_info); the limits built none
    assert len(built) - n0 == 5
    assert blas_threads() == before  # restored
    monkeypatch.setitem(sys.modules, "_acehamil_test_new_module", types.ModuleType("_acehamil_test_new_module"))
    n1 = len(built)
    with inner_threads():
        pass
    assert len(built) == n1 + 1  # a module imported since: the libraries are listed again


def test_harmonics_run_with_one_openmp_thread_unless_chosen(monkeypatch):
    """sphericart's OpenMP team inside AngularBasis.evaluate: one thread by default (in the main thread and
    in workers), the limit_threads number when chosen; the caller's setting is restored after."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from threadpoolctl import threadpool_info

    from acehamil.basis.angular import AngularBasis

    def omp():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]

    seen = []
    ab = AngularBasis(2)
    sh = ab._sh
    sh.compute(np.ones((1, 3)))  # sphericart's library (and its OpenMP runtime) loaded
    if not omp():
        pytest.skip("sphericart runs without an OpenMP runtime here")
    orig = type(sh).compute

    class Spy(type(sh)):
        def compute(self, x):
            seen.append(omp())
            return orig(self, x)

    monkeypatch.setattr(sh, "__class__", Spy)
    x = np.random.default_rng(0).standard_normal((10, 3))
    outside = omp()
    ab.evaluate(x)
    with limit_threads(2):
        ab.evaluate(x)
    assert seen[0] == [1] * len(seen[0]) and seen[1] == [2] * len(seen[1]), seen
    assert omp() == outside
    with ThreadPoolExecutor(1) as ex:  # a worker's own calculator and limit
        ex.submit(ab.evaluate, x).result()
