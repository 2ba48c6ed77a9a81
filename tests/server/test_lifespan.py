"""Start-up tunes the cycle collector: rarer collections, start-up objects left out of scans."""

import gc

from django.conf import settings

from observability import metrics
from server.lifespan import tune_garbage_collector


def test_garbage_collector_is_tuned_for_serving():
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == settings.SERVER_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # what start-up loaded is not scanned again
        assert metrics.time_collection in gc.callbacks  # each pause measured
    finally:
        gc.unfreeze()
        if metrics.time_collection in gc.callbacks:
            gc.callbacks.remove(metrics.time_collection)
        gc.set_threshold(*before)
