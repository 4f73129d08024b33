"""The console progress of training: the reports, plain lines off a terminal, redrawn lines on one."""

from __future__ import annotations

import io
import logging
import math

from ichct.pipeline.core.progress import ProgressLines
from ichct.pipeline.train.progress import TrainingProgress, training_display


def _progress(**kw):
    base = dict(kind="seg", state="training", epoch=3, max_epochs=10, key_metric="val_dice")
    return TrainingProgress(**{**base, **kw})


def test_reports_say_epoch_time_left_loss_and_best_metric():
    start = _progress(state="starting", epoch=0, budget_s=390.0)
    assert start.describe() == "caching data; then up to 10 epochs, time budget 6:30" and start.fraction == 0.0
    mid = _progress(epoch=3, epoch_fraction=0.5, elapsed_s=40.0, time_left_s=95.0, loss=0.51234)
    # within epoch 4; no validation yet
    assert mid.describe() == "epoch 4/10, 1:35 left, loss 0.5123, best val_dice -"
    assert math.isclose(mid.fraction, 0.35)
    validated = _progress(loss=0.5, best_metric=0.6125, best_epoch=2, time_left_s=None)
    assert validated.describe() == "epoch 3/10, loss 0.5000, best val_dice 0.613 (epoch 2)"
    # a time budget further along than the epochs sets the fraction
    assert math.isclose(_progress(elapsed_s=300.0, budget_s=400.0).fraction, 0.75)
    done = _progress(state="done", epoch=7, elapsed_s=3725.0, loss=0.4, best_metric=0.7, best_epoch=6,
                     stopped_by_budget=True)
    assert done.describe() == ("done: 7/10 epochs (time budget reached) in 1:02:05, loss 0.4000, "
                               "best val_dice 0.700 (epoch 6)")
    assert done.fraction == 1.0
    assert "nan" not in _progress(loss=float("nan"), best_metric=float("nan")).describe()


def test_plain_lines_at_start_every_interval_and_at_the_end():
    """Not a terminal: the first milestone, then one per interval, and the end; never mid-epoch reports."""
    out = io.StringIO()
    with training_display(stream=out, interval_s=3600) as display:
        display.report("seg", _progress(state="starting", epoch=0))
        display.report("cls", _progress(kind="cls", state="starting", epoch=0, key_metric="val_auc_any"))
        display.report("seg", _progress(epoch=0, epoch_fraction=0.5))  # mid-epoch: terminals only
        display.report("seg", _progress(epoch=1, loss=0.9))  # within the interval: not written
        display.report("seg", _progress(state="done", epoch=2, loss=0.8, best_metric=0.5, best_epoch=2))
    assert out.getvalue().splitlines() == [
        "[seg] caching data; then up to 10 epochs",
        "[cls] caching data; then up to 10 epochs",
        "[seg] done: 2/10 epochs in 0:00, loss 0.8000, best val_dice 0.500 (epoch 2)",
    ]
    out = io.StringIO()
    with training_display(stream=out, interval_s=0) as display:
        for epoch in (1, 2):
            display.report("seg", _progress(epoch=epoch))
            display.report("seg", _progress(epoch=epoch, epoch_fraction=0.3))
    assert [line.split(",")[0] for line in out.getvalue().splitlines()] == ["[seg] epoch 1/10", "[seg] epoch 2/10"]


def test_disabled_display_is_none():
    with training_display(enabled=False) as display:
        assert display is None


def test_terminal_lines_are_redrawn_in_place_with_logs_above(capsys):
    """On a terminal each run has one line, redrawn with carriage returns, and ichct's log messages are
    written above the lines (not through them)."""
    from ichct.pipeline.core.logging_setup import configure_logging

    configure_logging(0)  # a stderr handler, as the CLI sets up; conftest restores the logger
    stream = __import__("sys").stderr
    with ProgressLines(stream, terminal=True) as lines:
        lines.update("seg", 0.25, "epoch 1/4")
        lines.update("cls", 0.5, "epoch 2/4")
        logging.getLogger("ichct.train").info("a log line")
        lines.update("seg", 1.0, "done", final=True)
    err = capsys.readouterr().err
    assert "\r" in err and "seg  25% |" in err and "cls  50% |" in err and "seg 100% |" in err
    assert "INFO: a log line\n" in err
    assert err.rstrip().count("\n") >= 2  # the two lines are left on screen
