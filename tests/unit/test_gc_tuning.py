"""The collector's setting and its metric (shared/runtime/gc_tuning.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from shared.runtime.gc_tuning import tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def gc_seconds(generation: int) -> float:
    value = REGISTRY.get_sample_value("python_gc_seconds_total", {"generation": str(generation)})
    return value or 0.0


@pytest.fixture
def no_automatic_collections() -> Iterator[None]:
    """An automatic young collection between two readings would count under generation 0: keep it out."""
    gc.disable()
    yield
    gc.enable()


@pytest.mark.usefixtures("no_automatic_collections")
def test_a_collection_is_timed_under_its_generation() -> None:
    before = [gc_seconds(g) for g in range(3)]
    gc.collect(2)
    assert gc_seconds(2) > before[2]
    assert [gc_seconds(g) for g in range(2)] == before[:2]


@pytest.mark.usefixtures("restored_gc")
def test_tuning_freezes_what_exists_and_raises_only_the_young_threshold() -> None:
    _, middle, old = gc.get_threshold()
    survivor = [object()]  # alive when the service is built: frozen
    tune_gc(12345)
    assert gc.get_threshold() == (12345, middle, old)
    assert gc.get_freeze_count() > 0
    assert not any(o is survivor for o in gc.get_objects())  # frozen objects are outside every generation
