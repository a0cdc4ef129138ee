"""How many threads BLAS/LAPACK (and OpenMP) may use: one context manager, no global switches.

acehamil's heavy loops run many small dense operations: per-k generalized eigen-solves of
``norb x norb`` matrices and per-block-type normal equations.  A multi-threaded BLAS gains little
on matrices this small and, with more threads than free cores (a shared machine, several
processes), loses a lot to spinning threads: the README fit took 47-55 s with OpenBLAS' default
threading and 11 s with one thread on the 2-core development machine.  So:

- :func:`limit_threads` ``(n)`` limits the BLAS/OpenMP pools to ``n`` threads inside a ``with``
  block (threadpoolctl) and tells acehamil's hot loops to use ``n`` as well;
- the hot loops (:func:`acehamil.tb.eigen.solve_k`, the H/S fit's normal equations) run inside
  :func:`inner_threads`, which uses **one** thread unless a caller chose a number with
  :func:`limit_threads` (or ``acehamil --threads N``);
- ``limit_threads(None)`` changes nothing.

Examples
--------
>>> from threadpoolctl import threadpool_info
>>> with limit_threads(1):
...     all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
True
>>> requested_threads() is None
True
"""

from __future__ import annotations

import numbers
import os
import sys
import threading
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["limit_threads", "inner_threads", "with_inner_threads", "requested_threads", "threads_from_env", "blas_threads",
           "thread_mapper", "usable_cores", "blas_limits", "omp_threads"]

#: Number of threads chosen by the innermost enclosing :func:`limit_threads` (None: not chosen).
_REQUESTED: ContextVar = ContextVar("acehamil_threads", default=None)
#: Environment variable read by the command line when ``--threads`` is not given.
ENV = "ACEHAMIL_THREADS"


def _check(n) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"number of threads must be an int or None, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    return n


class _ControllerCache:
    """threadpoolctl's controller of the loaded BLAS/OpenMP libraries, built once per set of imported modules.

    ``threadpool_limits`` builds a new ``ThreadpoolController`` on every call: it reads and parses
    ``/proc/self/maps``, which the README job did ~100 times (0.25 s CPU; more wall time, as the read
    takes the memory-map lock the other threads' page faults need).  The loaded libraries only change
    when a module with a shared library is imported, so the controller is rebuilt when ``sys.modules``
    has grown (a library loaded by other means, e.g. ``ctypes``, is seen at the next import).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._controller = None
        self._n_modules = -1

    def get(self):
        n = len(sys.modules)
        with self._lock:
            if self._controller is None or n != self._n_modules:
                from threadpoolctl import ThreadpoolController

                self._controller, self._n_modules = ThreadpoolController(), n
            return self._controller


_CONTROLLERS = _ControllerCache()


def blas_limits(limits: int, user_api: str | None = "blas"):
    """``threadpoolctl.threadpool_limits(limits, user_api)`` (a context manager) on a cached controller
    (:class:`_ControllerCache`): the same limits set and restored, without listing the libraries again."""
    return _CONTROLLERS.get().limit(limits=limits, user_api=user_api)


def requested_threads() -> int | None:
    """Threads chosen by the enclosing :func:`limit_threads`, or None."""
    return _REQUESTED.get()


def threads_from_env(environ=None) -> int | None:
    """``$ACEHAMIL_THREADS`` as an int (None when unset or empty).

    Raises
    ------
    ValueError
        The variable is set to something other than a positive integer.
    """
    val = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not val:
        return None
    try:
        return _check(int(val))
    except ValueError:
        raise ValueError(f"${ENV} must be a positive integer, got {val!r}") from None


@contextmanager
def limit_threads(n: int | None):
    """Limit BLAS/LAPACK and OpenMP thread pools to ``n`` threads inside the block.

    Parameters
    ----------
    n : int >= 1 or None
        None leaves every pool as it is (and the hot loops at their default of one thread).

    Raises
    ------
    ValueError, TypeError
        ``n`` is not a positive integer or None.
    """
    n = _check(n)
    if n is None:
        yield
        return
    token = _REQUESTED.set(n)
    try:
        with blas_limits(n, user_api=None):
            yield
    finally:
        _REQUESTED.reset(token)


@contextmanager
def inner_threads():
    """Thread limit for loops over many small dense problems (per-k solves, per-block fits):
    the number chosen with :func:`limit_threads`, else one thread."""
    n = _REQUESTED.get()
    with blas_limits(1 if n is None else n):
        yield


def omp_threads():
    """OpenMP limit of the calling thread for a library call that would start its own team (sphericart's
    harmonics): the number chosen with :func:`limit_threads`, else one thread.  Per thread (OpenMP's
    thread count is a per-thread setting), so each worker of :func:`thread_mapper` limits its own calls.

    Measured on the 2-core machine at load ~6: one harmonics call of 40,000 directions (l_max 7) took
    8.5 ms CPU from the main thread with OpenMP's default 2 threads, 2.5 ms with one; from two worker
    threads at once 2.95 vs 2.56 ms CPU per call.
    """
    return blas_limits(_REQUESTED.get() or 1, user_api="openmp")


def blas_threads() -> list:
    """Current thread count of every loaded BLAS library (threadpoolctl's view), e.g. ``[1]``."""
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def with_inner_threads(func):
    """Decorator: run ``func`` inside :func:`inner_threads` (for the library's hot loops)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with inner_threads():
            return func(*args, **kwargs)

    return wrapper


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one), >= 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def thread_mapper(n_threads: int, in_flight: int | None = None):
    """A ``mapper`` for :func:`acehamil.models.hamiltonian.fit.fit` running the tasks on threads of this process.

    ``mapper(fn, common, tasks)`` yields ``fn(*common, *task)`` for each task, in task order,
    computed by ``n_threads`` threads with BLAS limited to one thread each (the tasks are many
    medium-size numpy and BLAS calls, most of which release the GIL).  The fit adds the results
    in task order, so the model equals the serial fit's bit for bit.  At most ``in_flight``
    tasks (default ``2 * n_threads``) are submitted ahead of the one being consumed.

    Parameters
    ----------
    n_threads : int >= 1
    in_flight : int, optional

    Examples
    --------
    >>> run = thread_mapper(2)
    >>> list(run(pow, (2,), [(k,) for k in range(5)]))
    [1, 2, 4, 8, 16]
    """
    n_threads = _check(n_threads)
    if n_threads is None:
        raise TypeError("n_threads must be an int >= 1, not None")
    window = 2 * n_threads if in_flight is None else _check(in_flight)

    def run(fn, common, tasks):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        with blas_limits(1), ThreadPoolExecutor(n_threads) as ex:
            pending = deque()
            try:
                for task in tasks:
                    pending.append(ex.submit(fn, *common, *task))
                    while len(pending) >= window:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for fut in pending:
                    fut.cancel()

    return run
