"""What a run shows while it goes: one progress display (stream position of total, triggers so far, the current
stage), the seconds each trigger spends per stage, and Lightning's banners once per run.

Everything goes through the ``lightning_modyn`` logger (INFO) on rank 0, as Lightning's own messages do, so a run
reads the same in a terminal, a log file and a notebook.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Iterator

from lightning.pytorch.utilities import rank_zero_only

STAGES = ("decide", "select", "score", "train", "store", "evaluate")
"""The stages of a trigger's cost: trigger decisions (``inform`` over the stream since the last trigger), the
selection policy, scoring by selection callbacks during the fit, the rest of the fit, saving the model, and
evaluating it during the run."""

log = logging.getLogger("lightning_modyn.pipeline")

_LIGHTNING_INFO = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


@rank_zero_only
def say(text: str, *args: object) -> None:
    """A progress message of the run, on rank 0 only."""
    log.info(text, *args)


@contextlib.contextmanager
def lightning_banners(show: bool) -> Iterator[None]:
    """Lightning's rank-zero information (accelerator banners, tips) shown, or held back to warnings and above: a
    loop builds a Trainer per fit and would repeat them at every one."""
    if show:
        yield
        return
    loggers = [logging.getLogger(name) for name in _LIGHTNING_INFO]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class RunProgress:
    """The run's progress display and the per-stage clock of the trigger in the making.

    Args:
        enabled: Show progress (the clock runs either way: its seconds go to the results).
        total: Samples in the stream (None in live mode: not known yet).
        every_seconds: While replaying without a fire, show the position at most this often.
    """

    def __init__(self, enabled: bool, total: int | None, every_seconds: float = 10.0) -> None:
        self.enabled = enabled
        self.total = total
        self.every_seconds = every_seconds
        self.position = 0
        self.triggers = 0
        self.stage = "replay"
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._shown = time.monotonic()

    def status(self) -> str:
        """``"4,000/12,000 samples (33%), 3 triggers, training"``."""
        where = f"{self.position:,} samples" if self.total is None else (
            f"{self.position:,}/{self.total:,} samples ({100 * self.position / max(self.total, 1):.0f}%)")
        return f"{where}, {self.triggers} trigger{'s' if self.triggers != 1 else ''}, {self.stage}"

    def show(self, detail: str = "") -> None:
        if self.enabled:
            say("%s%s", self.status(), f": {detail}" if detail else "")
        self._shown = time.monotonic()

    def replayed(self, position: int) -> None:
        """The trigger has seen the stream up to ``position``; shown if nothing was shown for a while."""
        self.position = position
        if time.monotonic() - self._shown >= self.every_seconds:
            self.show()

    @contextlib.contextmanager
    def stage_of(self, name: str, detail: str = "") -> Iterator[None]:
        """Time a stage of the trigger in the making (and show it when ``detail`` says what it does)."""
        if name not in self.seconds:
            raise ValueError(f"unknown stage {name!r}; the stages are {STAGES}")
        previous, self.stage = self.stage, name
        if detail:
            self.show(detail)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0
            self.stage = previous

    def move(self, seconds: float, source: str, target: str) -> None:
        """Count ``seconds`` of stage ``source`` as ``target`` instead (scoring callbacks run inside the fit)."""
        seconds = min(max(seconds, 0.0), self.seconds[source])
        self.seconds[source] -= seconds
        self.seconds[target] += seconds

    def take_seconds(self) -> dict[str, float]:
        """The seconds per stage of the trigger just finished (rounded), and a fresh clock for the next."""
        taken = {stage: round(s, 6) for stage, s in self.seconds.items()}
        self.seconds = dict.fromkeys(STAGES, 0.0)
        return taken
