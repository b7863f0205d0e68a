"""Plots a newcomer reads: time in the stream's unit, shifts marked, a labelled colour bar, training windows."""

from __future__ import annotations

import matplotlib
import pytest

from lightning_modyn.datasets.rotating_digits import rotating_digits_timeline
from lightning_modyn.evaluation import Evaluation
from lightning_modyn.evaluation.plots import TimeAxis, plot_results, timeline_of

matplotlib.use("Agg")


def _result(days: int = 4) -> dict:
    windows = [{"start": d * 86400, "end": (d + 1) * 86400, "samples": 10} for d in range(days)]
    triggers = [{"trigger_id": 0, "timestamp": 86400 - 1, "first_timestamp": 0},
                {"trigger_id": 1, "timestamp": 3 * 86400 - 1, "first_timestamp": 86400}]
    matrix = [[0.9, 0.8, 0.5, 0.4], [0.7, 0.8, 0.9, 0.85]]
    return {"windows": windows, "triggers": triggers, "matrix": {"accuracy": matrix},
            "composite": {"accuracy": [None, 0.8, 0.5, 0.85]},
            "trained_composite": {"accuracy": [0.9, 0.8, 0.9, None]},
            "datasets": {"heldout": {"windows": windows, "composite": {"accuracy": [None, 0.7, 0.4, 0.8]}}}}


def test_axis_reads_timestamps_in_the_stream_unit():
    timeline = rotating_digits_timeline(12, abrupt_shifts=[8], start=1000)
    axis = TimeAxis(timeline, first=1000)
    assert axis.label == "time (days since the stream's start)"
    assert axis(1000 + 8 * 86400) == pytest.approx(8.0)
    assert timeline["shifts"] == [{"at": 1000 + 8 * 86400, "label": "contrast inverted"}]
    raw = TimeAxis({}, first=500)
    assert raw.label == "time (timestamp)" and raw(700) == 700
    # a unit given to the evaluation wins over the store's, and keeps its shifts
    hours = timeline_of("hour", timeline)
    assert hours["unit"] == "hour" and hours["unit_seconds"] == 3600 and hours["shifts"] == timeline["shifts"]
    other = rotating_digits_timeline(3, period_seconds=3600, rotation_per_period=0)
    assert other["unit"] == "period" and other["unit_seconds"] == 3600 and other["shifts"] == []


def test_plots_mark_shifts_units_colour_bar_and_training_windows(tmp_path, monkeypatch):
    import matplotlib.figure

    saved = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def keep(fig, path, *args, **kwargs):
        saved[str(path).rsplit("/", 1)[-1]] = fig
        return real_savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    timeline = {"unit": "day", "unit_seconds": 86400, "start": 0,
                "shifts": [{"at": 2 * 86400, "label": "contrast inverted"}]}
    plot_results(str(tmp_path), _result(), timeline)
    assert (tmp_path / "accuracy_over_time.png").stat().st_size > 1000
    over_time = saved["accuracy_over_time.png"].axes[0]
    assert over_time.get_xlabel() == "time (days since the stream's start)"
    labels = [line.get_label() for line in over_time.get_lines()]
    assert "distribution shift" in labels and "trigger" in labels
    assert "currently trained model, on its own training data (in-sample)" in labels
    assert "currently active model, on heldout" in labels
    assert [t.get_text() for t in over_time.texts] == ["contrast inverted"]
    shift_line = [line for line in over_time.get_lines() if line.get_label() == "distribution shift"][0]
    assert shift_line.get_xdata()[0] == pytest.approx(2.0)  # day 2, not timestamp 172800
    matrix_fig = saved["matrix_accuracy.png"]
    heat, colour_bar = matrix_fig.axes
    assert colour_bar.get_ylabel() == "accuracy of the model on the window"
    outlines = [(p.get_x(), p.get_y(), p.get_width()) for p in heat.patches]
    assert outlines == [(-0.5, -0.5, 1), (0.5, 0.5, 2)]  # model 0: day 0; model 1: days 1-2


def test_evaluation_refuses_an_unknown_time_unit():
    with pytest.raises(ValueError, match="time_unit must be one of .*'day'.*got 'fortnight'"):
        Evaluation(every=10, time_unit="fortnight")
