"""``LoopState``: what a continual loop writes after every chunk (``loop_state.json``), so that a killed run resumes
from its last completed chunk — and, with seeded fits, ends with the same models and results."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lightning_modyn._io import write_json_atomic

STATE_FILE = "loop_state.json"


@dataclass
class LoopState:
    """The loop's progress through the stream.

    Attributes:
        position: Stream samples the trigger has seen (the end of the last completed chunk).
        intervals: ``(first, end)`` stream positions of each trigger's new data.
        trigger, selection: Their ``state_dict()``.
        fit_history: ``(samples, seconds)`` of every fit (the context's training-time forecast).
        models_trained: Models trained (or reused) so far.
        stage_seconds: Per trigger, the seconds spent in each stage (``decide``, ``select``, ``score``, ``train``,
            ``store``, ``evaluate``).
    """

    position: int = 0
    intervals: list[tuple[int, int]] = field(default_factory=list)
    trigger: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] | None = None
    fit_history: list[tuple[int, float]] = field(default_factory=list)
    models_trained: int = 0
    stage_seconds: list[dict[str, float]] = field(default_factory=list)

    def save(self, output_dir: str) -> None:
        write_json_atomic(os.path.join(output_dir, STATE_FILE), jsonable(asdict(self)))

    @classmethod
    def load(cls, output_dir: str) -> LoopState | None:
        """The state a run left in ``output_dir``, or None if it left none."""
        path = os.path.join(output_dir, STATE_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as handle:
            saved = json.load(handle)
        try:
            return cls(position=int(saved["position"]), intervals=[tuple(i) for i in saved["intervals"]],
                       trigger=saved["trigger"], selection=saved.get("selection"),  # None: from older versions
                       fit_history=[tuple(h) for h in saved["fit_history"]], models_trained=saved["models_trained"],
                       stage_seconds=list(saved.get("stage_seconds") or []))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path} is not a loop state this version reads ({type(err).__name__}: {err}); delete "
                             f"{output_dir} to start afresh") from None


def jsonable(value: Any) -> Any:
    """``value`` with numpy arrays and scalars as lists and Python numbers, tuples as lists, keys as strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
