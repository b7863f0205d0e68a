"""Evaluation over time: windows, the model × window matrix, composite models, reports and plots."""

from lightning_modyn.evaluation.evaluate import Evaluation, plot_results
from lightning_modyn.evaluation.windows import PeriodicWindows, SlicingWindows

__all__ = ["Evaluation", "PeriodicWindows", "SlicingWindows", "plot_results"]
