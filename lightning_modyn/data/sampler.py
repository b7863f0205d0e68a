"""Which keys each rank trains on, batch by batch: shuffled, split evenly, resumable mid-epoch.

:class:`SelectionSampler` is a ``DistributedSampler`` (so Lightning uses it as is and never re-wraps it) whose
items are whole batches: a :class:`KeyBatch` of store keys and weights. The order is a pure function of
``(seed, epoch, training set)``: every rank computes the same global permutation and takes its own disjoint
share, so the state needed to resume is global — ``(epoch, batches done)`` — and is right on every rank even
though Lightning checkpoints rank 0's loader state only.

An epoch's order costs O(n): a permutation and a gather of keys and weights, 0.2-0.3 s at 2 M keys here — a
pause before the first batch during which DataLoader workers idle. The sampler therefore computes each epoch's
share ahead on a background thread (numpy shuffles and gathers without holding the GIL): the first epoch's when
the sampler is built, the next one's while the current epoch trains.

Padding rule: when the training set does not split evenly across ranks, the permutation is extended by
repeating its first ``world_size - n % world_size`` samples (as ``DistributedSampler`` does) and those repeats
carry weight 0, so every rank gets ``ceil(n / world_size)`` samples and the same number of batches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from torch.utils.data import DistributedSampler

from lightning_modyn._checks import check_int
from lightning_modyn.data.ahead import AHEAD, new_owner


@dataclass
class KeyBatch:
    """One batch request: store keys and their weights (weight 0 marks padding)."""

    keys: np.ndarray
    weights: np.ndarray
    epoch: int = 0
    index: int = 0

    def __len__(self) -> int:
        return len(self.keys)


def training_set_fingerprint(keys: np.ndarray, weights: np.ndarray) -> str:
    """A short digest that changes whenever the keys or weights change (guards resuming on another set)."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(np.ascontiguousarray(keys, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(weights, dtype=np.float32).tobytes())
    return digest.hexdigest()


def epoch_permutation(n: int, seed: int, epoch: int, keys: np.ndarray | None = None,
                      locality_window: int | None = None) -> np.ndarray:
    """The global order of one epoch; with ``locality_window``, keys are shuffled only within windows of
    nearby keys (and the windows' order is shuffled), so reads stay local on cold or remote storage."""
    rng = np.random.default_rng([seed, epoch])
    if not locality_window or keys is None:
        # int32 halves the memory and the shuffle's cache misses; the same draws give the same order as int64
        return rng.permutation(np.arange(n, dtype=np.int32 if n < 2**31 else np.int64))
    by_key = np.argsort(keys, kind="stable")
    windows = [by_key[i : i + locality_window] for i in range(0, n, locality_window)]
    order = rng.permutation(len(windows))
    return np.concatenate([rng.permutation(windows[i]) for i in order]) if windows else by_key


def rank_positions(n: int, epoch: int, seed: int, shuffle: bool, rank: int, world: int,
                   keys: np.ndarray | None = None, locality_window: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(positions into the training set, padding mask) of rank ``rank``'s samples in ``epoch``."""
    order = epoch_permutation(n, seed, epoch, keys, locality_window) if shuffle else np.arange(n)
    total = -(-n // world) * world
    pad = np.zeros(total, bool)
    if total > n:
        order = np.concatenate([order, order[: total - n]])
        pad[n:] = True
    return order[rank:total:world], pad[rank:total:world]


def rank_share(keys: np.ndarray, weights: np.ndarray, epoch: int, seed: int, shuffle: bool, rank: int, world: int,
               locality_window: int | None, key_range: bool, uniform_weight: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rank ``rank``'s keys and weights of ``epoch`` in training order (padding repeats carry weight 0).

    A function of its arguments only, so that it can run ahead on a background thread.
    """
    positions, pad = rank_positions(len(keys), epoch, seed, shuffle, rank, world, keys, locality_window)
    # a contiguous key range or uniform weights need no random gather (the usual case of both)
    out_keys = np.add(positions, keys[0], dtype=np.int64) if key_range else keys[positions]
    out_weights = np.full(len(positions), weights[0]) if uniform_weight else weights[positions]
    out_weights[pad] = 0.0
    return out_keys, out_weights


class SelectionSampler(DistributedSampler):
    """Yields this rank's batches of ``(keys, weights)`` for one epoch of a training set.

    Args:
        keys: Store keys of the training set (int64).
        weights: One weight per key (float32).
        batch_size: Samples per batch.
        num_replicas: World size; rank: this process's rank (Lightning passes the trainer's).
        shuffle: Shuffle by ``(seed, epoch)``; otherwise keys are taken in the order given.
        seed: Shuffle seed; the same on every rank.
        drop_last: Drop this rank's last, incomplete batch.
        locality_window: Shuffle only within windows of this many neighbouring keys.
        epoch: The epoch this sampler starts at (its share is computed ahead from construction on).
    """

    def __init__(
        self,
        keys: np.ndarray,
        weights: np.ndarray,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        locality_window: int | None = None,
        epoch: int = 0,
    ) -> None:
        check_int("batch_size", batch_size, 1)
        super().__init__(dataset=range(len(keys)), num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.keys = np.asarray(keys, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.batch_size = batch_size
        self.drop_last_batch = drop_last
        self.locality_window = locality_window
        self.fingerprint = training_set_fingerprint(self.keys, self.weights)
        n = len(self.keys)
        self._key_range = bool(n) and int(self.keys[-1]) - int(self.keys[0]) == n - 1 and bool(
            (np.diff(self.keys) == 1).all())
        self._uniform_weight = bool(n) and bool((self.weights == self.weights[0]).all())
        self._resume_epoch: int | None = None
        self._resume_batches = 0
        self.epoch = epoch
        self._owner = new_owner(self)
        self._start_ahead(epoch)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_owner"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._owner = new_owner(self)  # a copy starts its own work

    # -------------------------------------------------------------- sizes
    @property
    def samples_per_rank(self) -> int:
        return -(-len(self.keys) // self.num_replicas)

    def __len__(self) -> int:
        n = self.samples_per_rank
        return n // self.batch_size if self.drop_last_batch else -(-n // self.batch_size)

    # -------------------------------------------------------------- order
    def _args(self, epoch: int) -> tuple:
        return (epoch, self.seed, self.shuffle, self.rank, self.num_replicas, self.locality_window)

    def rank_positions(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions into the training set, padding mask) of this rank's samples in ``epoch``."""
        return rank_positions(len(self.keys), epoch, self.seed, self.shuffle, self.rank, self.num_replicas,
                              self.keys, self.locality_window)

    def rank_share(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's keys and weights of ``epoch``, in training order (padding repeats carry weight 0)."""
        return rank_share(self.keys, self.weights, *self._args(epoch), self._key_range, self._uniform_weight)

    def _ahead_key(self, epoch: int) -> tuple:
        return ("rank_share", self.fingerprint, len(self.keys)) + self._args(epoch)

    def _start_ahead(self, epoch: int) -> None:
        """Start computing ``epoch``'s share on the background thread (with the settings as they are now)."""
        AHEAD.start(self._ahead_key(epoch), rank_share, self.keys, self.weights, *self._args(epoch),
                    self._key_range, self._uniform_weight, owner=self._owner)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._start_ahead(epoch)

    def _share(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``rank_share(epoch)``, taken from the background thread when it was computed ahead with these settings;
        then starts the next epoch's."""
        ahead = AHEAD.take(self._ahead_key(epoch))
        share = ahead.result() if ahead is not None else self.rank_share(epoch)
        self._start_ahead(epoch + 1)
        return share

    def __iter__(self) -> Iterator[KeyBatch]:
        epoch = self.epoch
        start = self._resume_batches if self._resume_epoch == epoch else 0
        self._resume_epoch, self._resume_batches = None, 0
        keys, weights = self._share(epoch)
        for b in range(start, len(self)):
            sel = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield KeyBatch(keys[sel], weights[sel], epoch, b)

    # -------------------------------------------------------------- resume
    def state_dict(self, batches_done: int) -> dict[str, Any]:
        return {"epoch": int(self.epoch), "batches_done": int(batches_done), "seed": int(self.seed),
                "fingerprint": self.fingerprint, "num_batches": len(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the epoch in ``state`` after its first ``batches_done`` batches (same training set only)."""
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(
                "the checkpoint's data-loader state was saved for a different training set (keys or weights "
                "changed); set the same training set before resuming, or start a new fit without ckpt_path"
            )
        self.set_epoch(int(state["epoch"]))
        self._resume_epoch = int(state["epoch"])
        self._resume_batches = int(state["batches_done"])
