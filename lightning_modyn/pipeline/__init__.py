"""The trigger-aware loop: replay a stream, retrain when a trigger fires, keep a model per trigger."""

from lightning_modyn.pipeline.config import Pipeline, RunEvaluator
from lightning_modyn.pipeline.context import LoopContext
from lightning_modyn.pipeline.loop import ContinualLoop, RunResult
from lightning_modyn.pipeline.registry import ModelRegistry
from lightning_modyn.pipeline.storage import FullStorage, IncrementalStorage, ModelStorage
from lightning_modyn.pipeline.stream import Chunk, ReplayStream, WatchStream

__all__ = ["Chunk", "ContinualLoop", "FullStorage", "IncrementalStorage", "LoopContext", "ModelRegistry",
           "ModelStorage", "Pipeline", "ReplayStream", "RunEvaluator", "RunResult", "WatchStream"]
