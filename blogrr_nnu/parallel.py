"""Worker pools for per-case work (verification, registration, preprocessing, pseudo-labels).

Workers are *spawned*, not forked. A forked child inherits the parent's OpenMP / BLAS thread pools in
whatever state they were; after the parent has used them (torch, a scikit-learn fit, ITK filters) the
child can hang or die: the test suite saw both (a GMM fit that never returned, and
``BrokenProcessPool: a process ... was terminated abruptly`` in preprocessing after torch had run in
the same process). Spawning costs a second or two of imports per worker, once per pool.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def process_pool(num_processes: int, **kwargs) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``num_processes`` spawned workers (extra keyword arguments are passed on)."""
    return ProcessPoolExecutor(max(1, int(num_processes)), mp_context=multiprocessing.get_context("spawn"), **kwargs)
