"""What each trigger cost: seconds per stage (deciding, selecting, scoring, training, storing, evaluating) as a CSV
table and a stacked bar plot in the run's folder (``costs.csv``, ``costs.png``)."""

from __future__ import annotations

import csv
import os
from typing import Any, Sequence

from lightning_modyn._io import atomic_write
from lightning_modyn.pipeline.progress import STAGES


def write_costs(output_dir: str, triggers: Sequence[dict[str, Any]], plot: bool = True) -> None:
    """``costs.csv`` (one row per trigger: id, stream position, samples selected, samples trained, sample passes,
    seconds per stage, total) and, with ``plot``, ``costs.png``. Triggers whose seconds a restart lost have empty
    cells."""
    if not triggers:
        return
    rows = [[t["trigger_id"], t["stream_position"], t.get("samples_selected", ""), t["samples_trained"],
             "" if t.get("sample_passes") is None else t["sample_passes"],
             *[_cell(t.get("seconds", {}).get(stage)) for stage in STAGES],
             _cell(sum(t["seconds"].values()) if t.get("seconds") else None)] for t in triggers]
    with atomic_write(os.path.join(output_dir, "costs.csv"), "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["trigger_id", "stream_position", "samples_selected", "samples_trained", "sample_passes",
                         *[f"{s}_seconds" for s in STAGES],
                         "total_seconds"])
        writer.writerows(rows)
    if plot:
        plot_costs(os.path.join(output_dir, "costs.png"), triggers)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def plot_costs(path: str, triggers: Sequence[dict[str, Any]]) -> None:
    """A stacked bar per trigger: where its seconds went."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = [t["trigger_id"] for t in triggers]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(ids) + 2), 3.5))
    bottom = [0.0] * len(ids)
    for stage in STAGES:
        heights = [float(t.get("seconds", {}).get(stage) or 0.0) for t in triggers]
        if any(heights):
            ax.bar(ids, heights, bottom=bottom, label=stage)
            bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xlabel("trigger")
    ax.set_ylabel("seconds")
    ax.set_title(f"cost per trigger: {sum(bottom):.1f}s over {len(ids)} triggers")
    ax.set_xticks(ids)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
