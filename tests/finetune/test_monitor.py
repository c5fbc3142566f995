"""What the training loop watches: interval means of the loss, the explosion rule, and SIGTERM turned into a flag
(only while inside :class:`StopSignal`, and only in the process that installed it)."""

from __future__ import annotations

import math
import os
import signal

import pytest

from finetune.monitor import EXPLOSION_FACTOR, LossWatch, StopSignal, TrainingInterrupted


def test_interval_means_and_the_explosion_rule() -> None:
    watch = LossWatch(history=[4.0, 2.0, float("nan"), 1.0])  # a resumed run's logged losses; NaN is left out
    for loss in (3.0, 1.0):
        watch.add(loss)
    assert watch.log_value() == 2.0  # mean of the steps since the previous record
    watch.add(5.0)
    assert watch.log_value() == 5.0 and math.isnan(watch.log_value())  # an empty interval has no mean
    assert watch.save_value() == 3.0  # mean of the three steps since the previous checkpoint
    median = 2.5  # of 4, 2, 1, 3, 1, 5
    assert not watch.explodes(EXPLOSION_FACTOR * median) and watch.explodes(EXPLOSION_FACTOR * median * 1.001)
    assert watch.is_good(250.0) and not watch.is_good(float("inf")) and not watch.is_good(251.0)
    assert LossWatch().is_good(1e30)  # nothing seen yet: any finite loss is good


def test_a_blow_up_within_the_first_interval_is_caught() -> None:
    """lr=1e6: the loss climbs from 2.8 to 1e31 within five steps; the mean of those steps is exploding."""
    watch = LossWatch()
    for loss in (2.8, 3.1, 4e3, 2e12, 1.4e31):
        watch.add(loss)
    value = watch.save_value()
    assert value == pytest.approx(2.8e30) and watch.explodes(value) and not watch.is_good(value)


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
