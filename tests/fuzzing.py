"""Shared limits of the fuzzing tests (tests/test_fuzz_*.py): Hypothesis runs a bounded number of examples
from a fixed seed (the "latent-canvas" profile, registered in conftest.py), and every reader under test must
answer each example within `bounded`'s time and memory."""
from __future__ import annotations

import time
import tracemalloc
from contextlib import contextmanager

from hypothesis import HealthCheck, settings

PROFILE = "latent-canvas"
settings.register_profile(PROFILE, derandomize=True, deadline=None, max_examples=60, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@contextmanager
def bounded(seconds: float = 2.0, megabytes: float = 64.0):
    """Fail when the block takes longer than `seconds` or allocates more than `megabytes` at its peak
    (Python and NumPy allocations, as tracemalloc sees them)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed <= seconds, f"took {elapsed:.2f} s (limit {seconds} s)"
    assert peak <= megabytes * 2**20, f"allocated {peak / 2**20:.1f} MiB at the peak (limit {megabytes} MiB)"
