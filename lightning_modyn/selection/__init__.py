"""Which samples a fit trains on: presampling policies over the store's catalog."""

from lightning_modyn.selection.balanced import LabelBalanced, TriggerBalanced
from lightning_modyn.selection.base import SelectionPolicy, TriggerHistory
from lightning_modyn.selection.freshness import Freshness
from lightning_modyn.selection.new_data import AllData, NewData
from lightning_modyn.selection.random_policies import Random, RandomNoReplacement
from lightning_modyn.selection.recorded_scores import RecordedScores

__all__ = ["AllData", "Freshness", "LabelBalanced", "NewData", "Random", "RandomNoReplacement", "RecordedScores", "SelectionPolicy",
           "TriggerBalanced", "TriggerHistory"]
