"""Evaluation over time: windows, the model × window matrix, composite models, reports and plots."""

from lightning_modyn.evaluation.evaluate import Evaluation
from lightning_modyn.evaluation.plots import plot_results
from lightning_modyn.evaluation.heldout import EvaluationDataset
from lightning_modyn.evaluation.windows import (
    BetweenTriggersWindows,
    PeriodicWindows,
    SlicingWindows,
    StaticWindows,
    TriggerOffsetWindows,
)

__all__ = ["BetweenTriggersWindows", "Evaluation", "EvaluationDataset", "PeriodicWindows", "SlicingWindows", "StaticWindows",
           "TriggerOffsetWindows", "plot_results"]
