"""What the training loop watches: interval means of the loss, the explosion rule, and SIGTERM turned into a flag
(only while inside :class:`StopSignal`, and only in the process that installed it)."""

from __future__ import annotations

import math
import os
import signal

import pytest

from finetune.monitor import EXPLOSION_FACTOR, LossWatch, StopSignal, TrainingInterrupted


def test_interval_means_and_the_explosion_rule() -> None:
    watch = LossWatch(
        logged=[4.0, 2.0, float("nan"), 1.0]
    )  # a resumed run's history; NaN is not a median input
    for loss in (3.0, 1.0):
        watch.add(loss)
    assert watch.log_value() == 2.0  # mean of the steps since the previous record
    watch.add(5.0)
    assert watch.log_value() == 5.0 and math.isnan(watch.log_value())  # an empty interval has no mean
    assert watch.save_value() == 3.0  # mean of the three steps since the previous checkpoint
    median = 2.0  # of 4, 2, 1, 2, 5
    assert not watch.explodes(EXPLOSION_FACTOR * median) and watch.explodes(EXPLOSION_FACTOR * median * 1.001)
    assert watch.is_good(150.0) and not watch.is_good(float("inf")) and not watch.is_good(201.0)
    assert LossWatch().is_good(1e30)  # nothing logged yet: any finite loss is good


def test_sigterm_sets_a_flag_only_inside_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        assert not stop.requested()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested() and stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_training_interrupted_exits_with_128_plus_the_signal() -> None:
    with pytest.raises(SystemExit) as info:
        raise TrainingInterrupted("stopped by SIGTERM at step 3", signal.SIGTERM)
    assert info.value.code == 143 and str(info.value) == "stopped by SIGTERM at step 3"
