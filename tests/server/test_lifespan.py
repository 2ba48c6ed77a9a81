"""Start-up tunes the cycle collector: rarer collections, start-up objects left out of scans."""

import gc

from server.lifespan import GC_THRESHOLDS, tune_garbage_collector


def test_garbage_collector_is_tuned_for_serving():
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # what start-up loaded is not scanned again
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
