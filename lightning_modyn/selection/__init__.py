"""Which samples a fit trains on: presampling policies over the store's catalog."""

from lightning_modyn.selection.base import SelectionPolicy, TriggerHistory
from lightning_modyn.selection.new_data import AllData, NewData

__all__ = ["AllData", "NewData", "SelectionPolicy", "TriggerHistory"]
