"""When to retrain: triggers see the stream in chunks and return the positions where they fire."""

from lightning_modyn.triggers.amount import DataAmountTrigger
from lightning_modyn.triggers.base import Trigger, TriggerContext
from lightning_modyn.triggers.cost import AvoidableMisclassificationCostTrigger, DataIncorporationLatencyCostTrigger
from lightning_modyn.triggers.decision import (
    DecisionPolicy,
    DynamicQuantileThreshold,
    DynamicRollingAverageThreshold,
    StaticThreshold,
)
from lightning_modyn.triggers.drift import DataDriftTrigger
from lightning_modyn.triggers.drift_metrics import METRICS
from lightning_modyn.triggers.ensemble import EnsembleTrigger
from lightning_modyn.triggers.performance import AvoidableMisclassifications, PerformanceTrigger
from lightning_modyn.triggers.time import TimeTrigger
from lightning_modyn.triggers.warmup import BatchedTrigger

__all__ = [
    "AvoidableMisclassificationCostTrigger",
    "AvoidableMisclassifications",
    "BatchedTrigger",
    "DataAmountTrigger",
    "DataDriftTrigger",
    "DataIncorporationLatencyCostTrigger",
    "DecisionPolicy",
    "DynamicQuantileThreshold",
    "DynamicRollingAverageThreshold",
    "EnsembleTrigger",
    "METRICS",
    "PerformanceTrigger",
    "StaticThreshold",
    "TimeTrigger",
    "Trigger",
    "TriggerContext",
]
