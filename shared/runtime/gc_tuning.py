"""Python's cyclic garbage collector, set for a long-running service, and the time it takes.

Under load a stage spent 4-5 % of its CPU in the collector (docs/performance.md): at CPython's default
young-generation threshold (700 allocations) it collected ~20 times a second, and each full collection
walked every object built at start-up (modules, pydantic schemas, faust's and aiokafka's classes), ~50 ms
each. `tune_gc`, called once a service is built, moves everything that exists then to the permanent
generation (`gc.freeze`: never scanned again) and collects the young generation every GC_THRESHOLD
allocations instead. Reference counting still frees almost everything at once; the collector only finds
cycles, and a higher threshold keeps those a little longer.

`python_gc_seconds_total` counts the time spent collecting, per generation, on every process that imports
this module, so the setting's effect can be read off `/metrics`.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from shared.runtime.metrics import GC_SECONDS

_BY_GENERATION = [GC_SECONDS.labels(str(generation)) for generation in range(3)]
_started = [0.0]


def _measure(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _BY_GENERATION[info["generation"]].inc(time.perf_counter() - _started[0])


if _measure not in gc.callbacks:
    gc.callbacks.append(_measure)


def tune_gc(threshold: int) -> None:
    """Freeze what the service has built so far and collect the young generation every `threshold`
    allocations (the older generations keep CPython's ratios: every 10 young, every 10 middle)."""
    gc.collect()  # what start-up left as garbage is not worth keeping forever
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)
