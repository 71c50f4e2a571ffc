"""Independent tiles side by side on the CPU, each on a thread of its own (issue 21).

A forward pass on one tile is a chain of short operations, and between two of them PyTorch's OpenMP threads wait for
each other (with ``OMP_WAIT_POLICY=PASSIVE``, as predict.py and app.py run, they sleep and are woken for every
operation).  Tiles do not depend on each other: on N threads, N tiles at once on one thread each keep every core busy
without those waits.  Measured with ``python benchmarks/cpu_inference.py`` (2 threads, RRDBNet x4 on 32-px tiles):
about 0.7x the wall time of tiles in turn, at less CPU time; the results are the same.  Each tile in flight holds its
own activations, so callers choose how many run at once within their memory budget
(``inference.tiling.plan_workers``).

The thread count is a per-thread setting in OpenMP (``omp_set_num_threads`` sets the calling thread's), whereas
``torch.set_num_threads`` also changes the default of every thread that starts later (a web server's request threads
among them).  So the workers set theirs through the OpenMP runtime torch loaded, found among the process's mapped
libraries (Linux), and check that torch sees it.  Where that fails, :func:`tile_workers` says 1 and tiles run in turn.
"""

import ctypes
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

_OMP_NAMES = ("libgomp", "libomp", "libiomp5")
_lock = threading.Lock()
_pools: dict[tuple[int, int], ThreadPoolExecutor | None] = {}
_openmp: list = []  # [CDLL or None], filled on first use


def openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime torch runs on (the one in torch's own folder first), or None where it cannot be found."""
    with _lock:
        if not _openmp:
            _openmp.append(_find_openmp())
        return _openmp[0]


def _find_openmp() -> ctypes.CDLL | None:
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line and any(n in line for n in _OMP_NAMES)}
    except OSError:  # not Linux
        return None
    torch_dir = os.path.dirname(torch.__file__)
    for path in sorted(paths, key=lambda p: (not p.startswith(torch_dir), p)):
        if os.path.basename(path).startswith(_OMP_NAMES):
            try:
                lib = ctypes.CDLL(path)  # already loaded: the same handle
            except OSError:
                continue
            if hasattr(lib, "omp_set_num_threads"):
                return lib
    return None


def _init_worker(threads: int) -> None:
    torch.get_num_threads()  # torch's own per-thread setup first: it would set the count back to the default
    openmp_runtime().omp_set_num_threads(threads)


def _pool(workers: int, threads: int) -> ThreadPoolExecutor | None:
    """The shared pool of ``workers`` threads with ``threads`` OpenMP threads each; None (remembered) when torch does
    not see the count a worker sets (another OpenMP runtime than torch's)."""
    key = (workers, threads)
    with _lock:
        if key in _pools:
            return _pools[key]
    pool = ThreadPoolExecutor(workers, "tile", initializer=_init_worker, initargs=(threads,))
    if pool.submit(torch.get_num_threads).result() != threads:
        pool.shutdown()
        pool = None
    with _lock:
        if _pools.setdefault(key, pool) is not pool and pool is not None:  # another caller made one meanwhile
            pool.shutdown()
        return _pools[key]


def tile_workers(n_tiles: int, device: torch.device | str, limit: int | None = None) -> int:
    """How many tiles to run at once: one per thread torch uses (``torch.get_num_threads()``), at most ``n_tiles``
    and ``limit`` (what memory allows); 1 off the CPU or where the OpenMP runtime cannot be set per thread."""
    if torch.device(device).type != "cpu" or openmp_runtime() is None:
        return 1
    return max(1, min(torch.get_num_threads(), n_tiles, n_tiles if limit is None else limit))


def map_tiles(fn: Callable, items: Iterable, workers: int = 1) -> Iterator:
    """``fn(item)`` for each item, yielded in order.  With ``workers`` > 1, that many run at once on threads of
    ``torch.get_num_threads() // workers`` OpenMP threads each, and at most ``workers`` items run or wait ahead of
    the one the caller is handling (memory: ``workers`` tiles' activations).  The caller's grad and inference modes
    (thread-local) apply in the workers too; an exception in ``fn`` is raised here."""
    use = workers > 1 and openmp_runtime() is not None
    pool = _pool(workers, max(1, torch.get_num_threads() // workers)) if use else None
    if pool is None:
        yield from map(fn, items)
        return
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def call(item):
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(item)

    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(call, item))  # the next tile starts as soon as a worker is free
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # an error or an abandoned iteration: drop what has not started, wait for what has
        for f in pending:
            f.cancel()
        for f in pending:
            if not f.cancelled():
                f.exception()
