"""Training curves (``training_curves.png`` from ``metrics.csv``) and the tracking helpers, without training.

Training with TensorBoard and MLflow, and the error without MLflow, are in test_train_pipeline.py
(they need its cohort).
"""

from __future__ import annotations

import csv
import math

import pytest

from ichct.errors import IchctError
from ichct.pipeline.train.curves import curve_series, plot_training_curves
from ichct.pipeline.train.tracking import check_tracking, flat_params, mlflow_tracking_uri

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _metrics_csv(path, rows):
    columns = ("epoch", "iteration", "train_loss", "lr", "val_dice", "val_auc_any", "time_s")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c, "") for c in columns])
    return path


def test_curve_series_takes_every_epoch_of_loss_and_rate_and_only_validated_epochs_of_metrics():
    rows = [{"epoch": "1", "train_loss": "2.5", "lr": "0.003", "val_dice": "nan", "val_auc_any": "nan"},
            {"epoch": "2", "train_loss": "2.1", "lr": "0.002", "val_dice": "0.31", "val_auc_any": "0.75"},
            {"epoch": "3", "train_loss": "1.9", "lr": "0.001", "val_dice": "", "val_auc_any": "nan"},
            {"epoch": "4", "train_loss": "1.7", "lr": "0.0", "val_dice": "0.42", "val_auc_any": "1"}]
    series = curve_series(rows)
    assert series == {"train_loss": ([1, 2, 3, 4], [2.5, 2.1, 1.9, 1.7]), "lr": ([1, 2, 3, 4], [0.003, 0.002, 0.001, 0.0]),
                      "val_dice": ([2, 4], [0.31, 0.42]), "val_auc_any": ([2, 4], [0.75, 1.0])}
    # a metric never validated, and no rows at all, give no curve
    assert "val_dice" not in curve_series([{**rows[0]}])
    assert curve_series([]) == {}


def test_training_curves_png_is_drawn_from_metrics_csv(tmp_path, monkeypatch):
    """The PNG is a real image, written atomically, and its data are the series of the CSV's rows."""
    import matplotlib.image

    import ichct.pipeline.train.curves as curves

    rows = [{"epoch": e, "iteration": 4 * e, "train_loss": 3.0 / e, "lr": 0.003 * (1 - e / 5),
             "val_dice": "nan" if e % 2 else 0.1 * e, "val_auc_any": "nan" if e % 2 else 1.0, "time_s": e}
            for e in range(1, 6)]
    metrics = _metrics_csv(tmp_path / "metrics.csv", rows)
    seen = []
    monkeypatch.setattr(curves, "curve_series", lambda r: seen.append(r) or curve_series(r))
    out = plot_training_curves(metrics, tmp_path / "training_curves.png", title="seg fold 0", best_epoch=4)
    assert out == tmp_path / "training_curves.png"
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    height, width = matplotlib.image.imread(out).shape[:2]
    assert width > 2 * height > 200
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    (read,) = seen  # the rows plotted are those of metrics.csv
    assert [int(r["epoch"]) for r in read] == [1, 2, 3, 4, 5]
    assert curve_series(read)["val_dice"] == ([2, 4], [pytest.approx(0.2), pytest.approx(0.4)])
    assert all(math.isclose(v, 3.0 / e) for e, v in zip(*curve_series(read)["train_loss"]))


def test_check_tracking_refuses_unknown_trackers_and_names_the_mlflow_extra(monkeypatch):
    import sys

    for ok in ("tensorboard", "mlflow", "none"):
        check_tracking(ok)
    with pytest.raises(IchctError, match="--tracking must be one of"):
        check_tracking("wandb")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` fails as if not installed
    with pytest.raises(IchctError, match=r"pip install 'ichct\[mlflow\]'"):
        check_tracking("mlflow")


def test_mlflow_store_is_the_run_folder_unless_the_environment_names_one(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_tracking_uri(tmp_path / "run") == (tmp_path / "run" / "mlruns").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert mlflow_tracking_uri(tmp_path / "run") == "http://mlflow.example:5000"


def test_flat_params_flattens_the_run_config_for_mlflow():
    params = flat_params({"kind": "cls", "config": {"network": {"rnn_hidden": 16}, "lr": 3e-4}, "note": "x" * 900})
    assert params == {"kind": "cls", "config.network.rnn_hidden": "16", "config.lr": "0.0003", "note": "x" * 500}
