"""Small example models for the recipes, written for plain Lightning (``x, y = batch``)."""

from lightning_modyn.models.digits import DigitsConvNet
from lightning_modyn.models.dlrm import TinyDLRM

__all__ = ["DigitsConvNet", "TinyDLRM"]
