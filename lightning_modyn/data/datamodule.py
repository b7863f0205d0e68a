"""``ModynDataModule``: train on any weighted subset of a store's keys, shuffled, split across ranks, resumable."""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Iterator

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from lightning_modyn.data.batch import KeyedBatch, note_training_batch
from lightning_modyn._checks import check_choice, check_int, check_optional_int, check_seed
from lightning_modyn.data.dataset import KeyedBatchDataset, passthrough
from lightning_modyn.data.decode import RecordsToTensors, SampleBatch
from lightning_modyn.data.nodes import KeyBatchNode, TrainLoader, checked_loader_options, node_pipeline
from lightning_modyn.data.sampler import KeyBatch, SelectionSampler
from lightning_modyn.data.transfer import release_rings, release_with, unpack
from lightning_modyn.store import SampleStore
from lightning_modyn.store.values import as_keys

#: ``ModynDataModule(worker_mode=...)``: process workers (``ModynDataLoader``) or reader threads (``TrainLoader``).
WORKER_MODES = ("process", "thread")
#: The mode of ``worker_mode=None``: reader threads, as fast as process workers in a CPU fit and twice as fast for the
#: loader alone (``docs/data.md``, torchdata section); processes stay for decodes that hold the GIL.
DEFAULT_WORKER_MODE = "thread"


def _check_worker_mode(value: Any) -> str:
    """The worker mode ``value`` names (None: the default one), else a ``ValueError`` naming the option and the
    choices. None is the default rather than ``"process"`` itself so that a recipe's saved settings, which list
    every option that is not None, stay those of recipes written before the option existed."""
    if value is None:
        return DEFAULT_WORKER_MODE
    return check_choice("worker_mode", value, WORKER_MODES, hint=f"(or None for {DEFAULT_WORKER_MODE!r})")


class ModynDataLoader(DataLoader):
    """A DataLoader over a :class:`SelectionSampler` whose ``state_dict`` makes a fit resumable mid-epoch.

    The state is ``(epoch, batches yielded)`` plus a fingerprint of the training set. It is the same on every
    rank, so the copy Lightning saves (rank 0's) restores every rank. Batches that workers handed over in a
    shared-memory slot or block (:mod:`lightning_modyn.data.transfer`) are copied out and unpacked here, so every
    batch reaches the loop as a :class:`KeyedBatch`.
    """

    def __init__(self, dataset: KeyedBatchDataset, sampler: SelectionSampler, **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, batch_size=None, collate_fn=passthrough, **kwargs)
        self._batches_done = 0
        self._rings: set[str] = set()  # worker rings of the persistent workers, released with this loader
        release_with(self, self._rings)

    def __iter__(self):
        sampler = self.sampler
        self._batches_done = sampler._resume_batches if sampler._resume_epoch == sampler.epoch else 0
        rings = self._rings if self.persistent_workers else set()  # other workers end with their iterator
        try:
            for batch in super().__iter__():
                self._batches_done += 1
                yield unpack(batch, rings)
        finally:
            if not self.persistent_workers:
                release_rings(rings)

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict(self._batches_done)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


class ModynDataModule(L.LightningDataModule):
    """A ``LightningDataModule`` over a :class:`SampleStore` that trains on a weighted set of keys.

    Each batch is one vectorized store read and one decode; it unpacks as the tuple ``decode`` returns
    (``x, y = batch`` in an unchanged ``training_step``) and carries ``batch.keys`` and ``batch.weights``.

    Args:
        store: A :class:`SampleStore` or its URL (opened read-only).
        decode: Batch decode function (see :mod:`lightning_modyn.data.decode`); default: ``RecordsToTensors()``
            for a store of records. Stores of samples need one (e.g. ``ArrayMember("raw", [32, 32, 3])``).
        batch_size: Samples per training batch.
        val_batch_size: Samples per validation/test batch (default: ``batch_size``).
        num_workers: Workers that fetch and decode batches: processes or threads, see ``worker_mode``.
        seed: Shuffle seed; the order is a function of ``(seed, epoch, training set)``.
        shuffle: Shuffle the training set every epoch.
        drop_last: Drop each rank's last incomplete training batch.
        locality_window: Shuffle within windows of this many neighbouring keys (cold or remote storage).
        pin_memory, persistent_workers, prefetch_factor: As for ``torch.utils.data.DataLoader``; with
            ``worker_mode="thread"``, ``prefetch_factor`` is the batches kept ready in all (default 2) and
            ``persistent_workers`` does nothing (threads start in no time).
        storage_options: fsspec options when ``store`` is a URL.
        worker_mode: How the workers run; None (default): ``"thread"``. ``"process"``: a
            :class:`ModynDataLoader`, whose worker processes (each reopening the store read-only) hand batches
            over in shared memory. ``"thread"``: a :class:`~lightning_modyn.data.nodes.TrainLoader`, the same
            batches read by threads of the training process (``torchdata.nodes``,
            :func:`~lightning_modyn.data.nodes.train_loader`), which share its GIL and cores with the training
            step; a ``decode`` of one's own must then be thread-safe. Both give the same batches in the same order
            and checkpoint the same state, so a fit resumes exactly in either mode from either mode's checkpoint.
            The loaders alone: threads ~2x faster; in a CPU fit, equal (``docs/data.md``).

    Example:
        >>> import tempfile
        >>> from lightning_modyn.datasets import synthetic_criteo_rows
        >>> store = SampleStore.create(tempfile.mkdtemp() + "/s")
        >>> keys = store.append_records(synthetic_criteo_rows(1000), labels="label")
        >>> dm = ModynDataModule(store, batch_size=256)
        >>> dm.set_training_set(keys[::2])
        >>> (x, y), = [b for b in dm.train_dataloader()][:1]
        >>> sorted(x), y.shape
        (['cat', 'dense'], torch.Size([256]))
    """

    def __init__(
        self,
        store: SampleStore | str,
        decode: Callable[[SampleBatch], tuple] | None = None,
        batch_size: int = 256,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        locality_window: int | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        storage_options: dict | None = None,
        worker_mode: str | None = None,
    ) -> None:
        super().__init__()
        check_int("batch_size", batch_size, 1)
        check_optional_int("val_batch_size", val_batch_size, 1, hint="or None (batch_size)")
        check_int("num_workers", num_workers, 0)
        check_optional_int("locality_window", locality_window, 1, hint="(shards read together) or None")
        check_seed(seed, hint="(the shuffle's random generator)")
        check_optional_int("prefetch_factor", prefetch_factor, 1, hint="(batches a worker loads ahead) or None")
        worker_mode = _check_worker_mode(worker_mode)
        if not isinstance(store, (SampleStore, str, os.PathLike)):
            raise TypeError(f"store must be a SampleStore or its URL, got {type(store).__name__} {store!r}")
        if not isinstance(store, SampleStore) and not os.fspath(store):
            raise ValueError("store must be a SampleStore or its URL, got an empty string")
        if storage_options is not None and not isinstance(storage_options, dict):
            raise TypeError(f"storage_options must be a dict of fsspec options, got {type(storage_options).__name__}")
        if decode is not None and (isinstance(decode, type) or not callable(decode)):
            what = f"the class {decode.__name__} itself" if isinstance(decode, type) else type(decode).__name__
            raise TypeError(f"decode must be a callable(SampleBatch) -> tuple (e.g. ArrayMember('raw', shape=[...])), "
                            f"got {what}" + ("; pass an instance of it" if isinstance(decode, type) else ""))
        self._store = store if isinstance(store, SampleStore) else None
        self._store_url = store.url if isinstance(store, SampleStore) else os.fspath(store)
        self.storage_options = storage_options
        self.decode = decode
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.locality_window = locality_window
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.prefetch_factor = prefetch_factor
        self.worker_mode = worker_mode
        self._sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._train_subset: tuple[np.ndarray, np.ndarray] | None = None
        self._train_sampler: SelectionSampler | None = None
        #: Which trigger the current fit trains for; set by the continual loop, read by selection callbacks.
        self.trigger_id: int | None = None

    # ------------------------------------------------------------------ store
    @property
    def store(self) -> SampleStore:
        if self._store is None:
            self._store = SampleStore.open(self._store_url, readonly=True, storage_options=self.storage_options)
        return self._store

    def _decoder(self) -> Callable[[SampleBatch], tuple]:
        if self.decode is not None:
            return self.decode
        if self.store.record_dtype is not None and self.store.holds_only_records():
            return RecordsToTensors()
        raise ValueError(
            f"{self.store.url} holds samples, which need a decode function: pass decode=..., e.g. "
            "lightning_modyn.data.ArrayMember('raw', shape=[32, 32, 3]) or your own callable(SampleBatch) -> (x, y)"
        )

    # ------------------------------------------------------------------ sets
    def _check_set(self, name: str, keys: Any, weights: Any) -> tuple[np.ndarray, np.ndarray]:
        try:
            raw = keys if isinstance(keys, np.ndarray) else np.asarray(keys)
        except ValueError as err:  # ragged nesting
            raise TypeError(f"{name} keys must be a flat sequence of integers (store keys): {err}") from None
        keys = as_keys(raw, f"{name} keys")
        if len(keys) == 0:
            raise ValueError(f"the {name} set is empty; give at least one key")
        if weights is None:
            weights = np.ones(len(keys), np.float32)
        else:
            try:
                weights = np.asarray(weights, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise TypeError(f"{name} weights must be numbers, one per key: {err}") from None
            if weights.shape != keys.shape:
                raise ValueError(f"{name} weights must have one value per key ({len(keys)}), got shape {weights.shape}")
            bad = ~np.isfinite(weights)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{name} weight of key {int(keys[i])} is {weights[i]}; weights must be finite")
            if (weights < 0).any():
                i = int(np.flatnonzero(weights < 0)[0])
                raise ValueError(f"{name} weight of key {int(keys[i])} is negative ({weights[i]}); weights must be >= 0")
            with np.errstate(over="ignore"):
                weights32 = weights.astype(np.float32)
            if not np.isfinite(weights32).all():
                i = int(np.flatnonzero(~np.isfinite(weights32))[0])
                raise ValueError(f"{name} weight of key {int(keys[i])} is {weights[i]}, beyond float32's range; "
                                 "scale the weights down")
            if not weights32.any():
                raise ValueError(f"every {name} weight is 0: no sample would count; give some a positive weight")
            weights = weights32
        live = self.store.contains(keys)
        if not live.all():
            dead = keys[~live]
            self.store.lookup(dead)  # raises UnknownKeyError for keys never assigned, DeletedKeyError otherwise
        return keys, weights

    def set_training_set(self, keys: Any, weights: Any = None) -> None:
        """What the next fit (or, with ``reload_dataloaders_every_n_epochs=1``, the next epoch) trains on.

        Inside a fit it may be called until the first train loader is built (e.g. in ``setup`` or
        ``on_fit_start``); later calls need ``reload_dataloaders_every_n_epochs=1``.

        ``keys`` may repeat (sampling with replacement). Weights default to 1; they must be finite and >= 0.
        """
        trainer = getattr(self, "trainer", None)
        loader_built = self._train_sampler is not None  # before the fit's first train loader, a change is seen
        if (trainer is not None and trainer.training and loader_built
                and trainer.reload_dataloaders_every_n_epochs != 1):
            raise RuntimeError(
                "set_training_set during a fit takes effect at the next epoch only if the Trainer reloads its "
                "train dataloader every epoch: use Trainer(reload_dataloaders_every_n_epochs=1)"
            )
        self._sets["train"] = self._check_set("training", keys, weights)
        self._train_subset = None

    def set_validation_set(self, keys: Any = None, weights: Any = None, start: int | None = None,
                           end: int | None = None) -> None:
        """Validation keys, or the live keys with ``start <= timestamp < end``."""
        self._sets["val"] = self._check_set("validation", self._keys_or_window(keys, start, end), weights)

    def set_test_set(self, keys: Any = None, weights: Any = None, start: int | None = None,
                     end: int | None = None) -> None:
        """Test keys, or the live keys with ``start <= timestamp < end``."""
        self._sets["test"] = self._check_set("test", self._keys_or_window(keys, start, end), weights)

    def _keys_or_window(self, keys: Any, start: int | None, end: int | None) -> Any:
        if keys is not None:
            if start is not None or end is not None:
                raise ValueError("give either keys or a time window (start/end), not both")
            return keys
        if start is None and end is None:
            raise ValueError("give keys or a time window (start and/or end)")
        return self.store.time_range(start, end).keys  # the store checks the bounds, naming them

    @property
    def training_set(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The current ``(keys, weights)`` to train on, or None before :meth:`set_training_set`."""
        return self._sets.get("train")

    def set_training_subset(self, keys: Any, weights: Any = None) -> None:
        """Train on this weighted subset of the training set until :meth:`clear_training_subset`.

        Sample-then-batch selection callbacks use it: the training set chosen before the fit stays as it is (they
        score all of it again every period), while the loaders built from now on read the subset. Call it before
        the fit's first train loader is built (``on_fit_start``) or with ``reload_dataloaders_every_n_epochs=1``.
        """
        if "train" not in self._sets:
            raise RuntimeError("set_training_subset needs a training set: call set_training_set(keys) first")
        self._train_subset = self._check_set("training subset", keys, weights)

    def clear_training_subset(self) -> None:
        """Train on the whole training set again."""
        self._train_subset = None

    @property
    def training_subset(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The subset set by a selection callback, or None (the whole training set is used)."""
        return self._train_subset

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Note the training batch, so that ``batch.weights`` and ``batch.keys`` stay reachable when a wrapper
        (``DistributedDataParallel`` with ``device_ids``) hands ``training_step`` a plain tuple of its tensors."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            note_training_batch(batch)
        return batch

    def batches(self, keys: Any, batch_size: int | None = None, store: SampleStore | None = None
                ) -> Iterator[KeyedBatch]:
        """Decoded batches of ``keys`` in the given order, in this process (no DataLoader, no Trainer).

        For work beside a fit that needs the model's view of arbitrary samples: scoring a training set,
        evaluating windows of a stream. ``batch_size`` defaults to ``val_batch_size``; every weight is 1.
        ``store``: read the keys from this store (held-out data) with this DataModule's decode.
        """
        keys = as_keys(keys)
        check_optional_int("batch_size", batch_size, 1, hint="or None (val_batch_size)")
        size = batch_size or self.val_batch_size
        dataset = KeyedBatchDataset(self.store if store is None else store, self._decoder())
        for a in range(0, len(keys), size):
            chunk = keys[a : a + size]
            yield dataset.read(KeyBatch(chunk, np.ones(len(chunk), np.float32)))

    # ------------------------------------------------------------------ loaders
    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _live(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self._sets:
            what = {"train": "set_training_set(keys)", "val": "set_validation_set(...)", "test": "set_test_set(...)"}
            raise RuntimeError(f"no {name} set: call {what[name]} on the ModynDataModule first")
        keys, weights = self._train_subset if name == "train" and self._train_subset is not None else self._sets[name]
        live = self.store.contains(keys)
        if not live.all():
            warnings.warn(f"{int((~live).sum())} key(s) of the {name} set were deleted from the store; "
                          "they are dropped", RuntimeWarning, stacklevel=3)
            keys, weights = keys[live], weights[live]
            if not len(keys):
                raise ValueError(f"every key of the {name} set was deleted from the store")
        return keys, weights

    def _parts(self, name: str, batch_size: int, shuffle: bool, drop_last: bool, world: int | None = None,
               rank: int | None = None, epoch: int | None = None) -> tuple[KeyedBatchDataset, SelectionSampler]:
        """The sampler of one rank's batch requests and the dataset that reads them (rank and epoch by default
        the trainer's, or 0 of 1 outside a fit)."""
        keys, weights = self._live(name)
        if world is None or rank is None:
            world, rank = self._rank()
        trainer = getattr(self, "trainer", None)
        # a loader rebuilt mid-fit (reload_dataloaders_every_n_epochs) starts at the trainer's epoch: its order is
        # then computed ahead from here on, and not epoch 0's for nothing
        if epoch is None:
            epoch = int(trainer.current_epoch) if trainer is not None and shuffle else 0
        sampler = SelectionSampler(keys, weights, batch_size, num_replicas=world, rank=rank, shuffle=shuffle,
                                   seed=self.seed, drop_last=drop_last,
                                   locality_window=self.locality_window if shuffle else None, epoch=epoch)
        dataset = KeyedBatchDataset(self.store, self._decoder(), any_order=name == "train")
        return dataset, sampler

    def _loader(self, name: str, batch_size: int, shuffle: bool, drop_last: bool) -> ModynDataLoader | TrainLoader:
        dataset, sampler = self._parts(name, batch_size, shuffle, drop_last)
        if _check_worker_mode(self.worker_mode) == "thread":  # (the attribute may have changed since)
            options = checked_loader_options(self.num_workers, "thread", None, self.pin_memory, self.prefetch_factor)
            return TrainLoader(node_pipeline(dataset, sampler, *options))
        kwargs: dict[str, Any] = {"num_workers": self.num_workers, "pin_memory": self.pin_memory,
                                  "persistent_workers": self.persistent_workers}
        if self.num_workers > 0 and self.prefetch_factor is not None:
            kwargs["prefetch_factor"] = self.prefetch_factor
        return ModynDataLoader(dataset, sampler, **kwargs)

    def train_parts(self, num_replicas: int | None = None, rank: int | None = None, epoch: int | None = None
                    ) -> tuple[KeyedBatchDataset, SelectionSampler]:
        """:meth:`train_dataloader` without its DataLoader: the sampler of one rank's batch requests (the order,
        computed ahead, with its resume state) and the dataset whose ``read`` fetches and decodes one request.

        For other loaders over the same order and batches (:mod:`lightning_modyn.data.nodes`). ``num_replicas``
        and ``rank`` (both or neither) default to the trainer's, or one rank outside a fit; ``epoch`` to the
        trainer's current epoch, or 0.
        """
        if (num_replicas is None) != (rank is None):
            raise ValueError(f"give both num_replicas and rank, or neither; got num_replicas={num_replicas!r}, "
                             f"rank={rank!r}")
        if num_replicas is not None:
            num_replicas = check_int("num_replicas", num_replicas, 1)
            rank = check_int("rank", rank, 0, num_replicas - 1, hint="(one of the num_replicas ranks)")
        if epoch is not None:
            epoch = check_int("epoch", epoch, 0)
        return self._parts("train", self.batch_size, self.shuffle, self.drop_last, num_replicas, rank, epoch)

    def train_dataloader(self) -> ModynDataLoader | TrainLoader:
        """This rank's training batches, in the order of ``(seed, epoch, training set)``; a loader whose
        ``state_dict`` Lightning checkpoints, so that a fit resumes mid-epoch exactly (either ``worker_mode``)."""
        loader = self._loader("train", self.batch_size, self.shuffle, self.drop_last)
        sampler = loader.sampler
        self._train_sampler = sampler.sampler if isinstance(sampler, KeyBatchNode) else sampler
        return loader

    def val_dataloader(self) -> ModynDataLoader | TrainLoader | list:
        return self._loader("val", self.val_batch_size, False, False) if "val" in self._sets else []

    def test_dataloader(self) -> ModynDataLoader | TrainLoader:
        return self._loader("test", self.val_batch_size, False, False)

    def teardown(self, stage: str) -> None:
        self._train_sampler = None


__all__ = ["ModynDataLoader", "ModynDataModule"]
