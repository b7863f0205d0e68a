"""Downsampling: score samples during training and keep a weighted subset (batch-then-sample or
sample-then-batch), as Lightning callbacks on an unchanged model.

>>> strategy_by_name("loss")
Loss(rule='proportional', balance=False)
"""

from __future__ import annotations

from lightning_modyn._checks import import_object
from lightning_modyn.selection.downsampling.base import DownsamplingStrategy, ScoreBasedStrategy
from lightning_modyn.selection.downsampling.callbacks import BatchThenSample, SampleThenBatch, take_rows_in_place
from lightning_modyn.selection.downsampling.context import SelectionContext
from lightning_modyn.selection.downsampling.coresets import Craig, GradMatch, KCenter, Submodular
from lightning_modyn.selection.downsampling.el2n import EL2N, GraNd
from lightning_modyn.selection.downsampling.forgetting import ForgettingEvents
from lightning_modyn.selection.downsampling.forward import ScoringForward
from lightning_modyn.selection.downsampling.gradnorm import GradNorm
from lightning_modyn.selection.downsampling.loss import Loss
from lightning_modyn.selection.downsampling.rho_loss import RhoLoss
from lightning_modyn.selection.downsampling.rs2 import RS2
from lightning_modyn.selection.downsampling.scoring import ScoringBatch
from lightning_modyn.selection.downsampling.selective_backprop import SelectiveBackprop
from lightning_modyn.selection.downsampling.switching import Switching
from lightning_modyn.selection.downsampling.uncertainty import Uncertainty
from lightning_modyn.selection.downsampling.uniform import Uniform
from lightning_modyn.selection.downsampling.weights import selection_weights, weighted_mean

#: Strategies by the short name the callbacks accept (``BatchThenSample("loss", ratio=25)``), default arguments.
STRATEGIES: dict[str, type[DownsamplingStrategy]] = {
    "uniform": Uniform, "loss": Loss, "gradnorm": GradNorm, "uncertainty": Uncertainty, "el2n": EL2N,
    "grand": GraNd, "forgetting": ForgettingEvents, "selective_backprop": SelectiveBackprop, "kcenter": KCenter,
    "craig": Craig, "gradmatch": GradMatch, "submodular": Submodular, "rho_loss": RhoLoss, "rs2": RS2,
}


def strategy_by_name(name: str) -> DownsamplingStrategy:
    """A strategy with default arguments from its short name (see :data:`STRATEGIES`) or from the import path of
    a :class:`DownsamplingStrategy` subclass (``mymodels.MyScore``)."""
    if name in STRATEGIES:
        return STRATEGIES[name]()
    if "." in name:
        cls = import_object("strategy", name)
        if isinstance(cls, type) and issubclass(cls, DownsamplingStrategy):
            return cls()
        raise ValueError(f"strategy: {name!r} is not a DownsamplingStrategy subclass")
    raise ValueError(f"unknown downsampling strategy {name!r}; choose one of {sorted(STRATEGIES)}, the import path "
                     "of a DownsamplingStrategy subclass, or pass an instance")


__all__ = [
    "EL2N", "RS2", "STRATEGIES", "BatchThenSample", "Craig", "DownsamplingStrategy", "ForgettingEvents", "GradMatch",
    "GradNorm", "GraNd", "KCenter", "Loss", "RhoLoss", "SampleThenBatch", "ScoreBasedStrategy", "ScoringBatch",
    "ScoringForward", "SelectionContext", "SelectiveBackprop", "Submodular", "Switching", "Uncertainty", "Uniform",
    "selection_weights", "strategy_by_name", "take_rows_in_place", "weighted_mean",
]
