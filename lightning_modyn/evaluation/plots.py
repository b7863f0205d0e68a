"""Plots of an evaluation that a newcomer reads without help: each metric over time (in the stream's time unit,
triggers and the stream's distribution shifts marked) and the model × window matrix (a labelled colour bar, each
model's new-data window outlined).

A stream's *timeline* says how to read its timestamps: ``{"unit": "day", "unit_seconds": 86400, "start": t0,
"shifts": [{"at": t, "label": "contrast inverted"}]}``. The bundled generators store theirs in the store's
``timeline`` attribute; :class:`~lightning_modyn.evaluation.Evaluation` takes one too (``time_unit``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

TIME_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400, "week": 604_800}


def timeline_of(time_unit: str | None, stored: Any) -> dict[str, Any]:
    """The timeline plots use: the store's (``stored``, when it is one), with ``time_unit`` (a key of
    :data:`TIME_UNITS`) taking precedence for the unit; ``{}`` (raw timestamps) when neither says."""
    timeline = dict(stored) if isinstance(stored, dict) else {}
    if time_unit is not None:
        timeline["unit"], timeline["unit_seconds"] = time_unit, TIME_UNITS[time_unit]
    return timeline


class TimeAxis:
    """Timestamps → positions on a plot's time axis, and that axis's label."""

    def __init__(self, timeline: dict[str, Any], first: float) -> None:
        self.scale = float(timeline.get("unit_seconds") or 1)
        self.origin = float(timeline["start"]) if "start" in timeline else (first if "unit" in timeline else 0.0)
        self.label = (f"time ({timeline['unit']}s since the stream's start)" if "unit" in timeline
                      else "time (timestamp)")

    def __call__(self, t: Any) -> Any:
        return (np.asarray(t, dtype=float) - self.origin) / self.scale


def plot_results(out: str, result: dict[str, Any], timeline: dict[str, Any] | None = None) -> None:
    """``<metric>_over_time.png`` and ``matrix_<metric>.png`` for every metric of ``result`` (an evaluation's
    ``results.json``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = timeline or {}
    axis = TimeAxis(timeline, result["windows"][0]["start"] if result["windows"] else 0)
    for metric in result["composite"]:
        fig, ax = plt.subplots(figsize=(9, 4))
        _over_time(ax, result, metric, axis, timeline)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"{metric}_over_time.png"), dpi=100)
        plt.close(fig)
        matrix = np.array(result["matrix"][metric], dtype=float)
        if matrix.size == 0:  # no trigger fired, so no model: the over-time plot says so, there is no matrix
            continue
        fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * matrix.shape[1] + 3), max(3.5, 0.3 * matrix.shape[0] + 2)))
        _matrix(fig, ax, result, metric, matrix, axis)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"matrix_{metric}.png"), dpi=100)
        plt.close(fig)


def _over_time(ax: Any, result: dict[str, Any], metric: str, axis: TimeAxis, timeline: dict[str, Any]) -> None:
    def mids(part: dict[str, Any]) -> Any:
        return axis([(w["start"] + w["end"]) / 2 for w in part["windows"]])

    def values(series: list) -> list[float]:
        return [np.nan if v is None else v for v in series]

    ax.plot(mids(result), values(result["composite"][metric]), marker="o",
            label="currently active model, on the stream")
    trained = result.get("trained_composite", {}).get(metric)
    if trained is not None:
        ax.plot(mids(result), values(trained), marker=".", linestyle="--", alpha=0.7,
                label="currently trained model, on its own training data (in-sample)")
    for name, part in result.get("datasets", {}).items():
        ax.plot(mids(part), values(part["composite"][metric]), marker="s", label=f"currently active model, on {name}")
    for i, t in enumerate(result["triggers"]):
        ax.axvline(axis(t["timestamp"]), color="grey", alpha=0.4, linewidth=1, label="trigger" if i == 0 else None)
    for i, shift in enumerate(timeline.get("shifts", [])):
        at = axis(shift["at"])
        ax.axvline(at, color="tab:red", linestyle=":", linewidth=1.5,
                   label="distribution shift" if i == 0 else None)
        ax.annotate(shift.get("label", ""), (at, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                    va="top", ha="right", fontsize="x-small", color="tab:red")
    if not result["triggers"]:
        ax.text(0.5, 0.5, "no trigger fired: no model to evaluate", transform=ax.transAxes, ha="center")
    ax.set_xlabel(axis.label)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} over time ({len(result['triggers'])} triggers)")
    ax.legend(loc="lower left", fontsize="small")


def _matrix(fig: Any, ax: Any, result: dict[str, Any], metric: str, matrix: np.ndarray, axis: TimeAxis) -> None:
    from matplotlib.patches import Rectangle

    bounded = metric.startswith(("accuracy", "f1", "roc_auc"))
    im = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0 if bounded else None, vmax=1 if bounded else None)
    fig.colorbar(im, ax=ax).set_label(f"{metric} of the model on the window")
    windows = result["windows"]
    step = max(1, len(windows) // 12)
    ax.set_xticks(range(0, len(windows), step))
    ax.set_xticklabels([f"{axis(w['start']):g}" for w in windows[::step]], rotation=45, fontsize="small")
    ax.set_xlabel(f"evaluation window, by its start: {axis.label}")
    ax.set_yticks(range(len(result["triggers"])))
    ax.set_yticklabels([str(t["trigger_id"]) for t in result["triggers"]], fontsize="small")
    ax.set_ylabel("model (trigger id)")
    starts = np.array([w["start"] for w in windows])
    ends = np.array([w["end"] for w in windows])
    for i, t in enumerate(result["triggers"]):
        first = t.get("first_timestamp", t["timestamp"])
        cells = np.flatnonzero((starts <= t["timestamp"]) & (ends > first))  # windows holding its new data
        if len(cells):
            ax.add_patch(Rectangle((cells[0] - 0.5, i - 0.5), len(cells), 1, fill=False, edgecolor="white",
                                   linewidth=1.5))
    ax.set_title(f"{metric}: every model on every window (white: the model's new data)")
