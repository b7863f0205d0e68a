"""A training set's batches as a ``torchdata.nodes`` pipeline: the DataModule's order, fetched by a mapper.

The pipeline has two halves, as :meth:`ModynDataModule.train_dataloader` has (its sampler and its dataset):

* :class:`KeyBatchNode`, a ``torchdata.nodes.BaseNode`` of this rank's batch *requests* (:class:`KeyBatch`: store
  keys and weights) in the DataModule's order, epoch after epoch. It wraps the DataModule's own
  :class:`SelectionSampler`, so the order is the same function of ``(seed, epoch, training set, rank)``, and each
  epoch's order is still computed ahead on the sampler's background thread. Its state is the sampler's
  ``(epoch, batches done)``: the very dict ``ModynDataLoader.state_dict()`` returns, so either loader resumes from
  the other's.
* a ``ParallelMapper`` (``in_order=True``) whose function is the DataModule's batch read
  (``KeyedBatchDataset.read``: one store gather and one decode per batch) — the work worth spreading over
  threads or processes, while the cheap order stays in one place. With ``num_workers=0`` the mapper reads in the
  consuming thread.

:func:`train_node` builds ``Prefetcher(PinMemory(ParallelMapper(KeyBatchNode(...), read)))`` from a DataModule
(each stage only when asked for); wrap it in ``torchdata.nodes.Loader`` to iterate epochs and to save and load
its state. Batches are the same :class:`KeyedBatch` objects (same keys in the same order, same tensors) that
``train_dataloader()`` gives for the same seed, epoch and rank. For a Lightning fit, :class:`TrainLoader` (or
:func:`train_loader`) is that ``Loader`` with a length, the order as its ``sampler`` and ``ModynDataLoader``'s
state: the trainer then sets its epochs and checkpoints its state exactly. ``ModynDataModule(worker_mode="thread")``
gives its batches so (training, validation and test); ``return train_loader(self, num_workers=2,
method="process")`` in a DataModule's ``train_dataloader`` picks other options.

What this path does not have (compared with :class:`ModynDataLoader`): process workers return each tensor through
its own shared-memory segment (no slot ring, :mod:`lightning_modyn.data.transfer`), and they are started again at
every epoch (``ParallelMapper`` has no persistent workers).

Example (a tiny store; three batches an epoch; resume after the first batch of the second epoch):

    >>> import tempfile
    >>> from torchdata.nodes import Loader
    >>> from lightning_modyn import SampleStore
    >>> from lightning_modyn.data import ModynDataModule, train_node
    >>> from lightning_modyn.datasets import synthetic_criteo_rows
    >>> store = SampleStore.create(tempfile.mkdtemp() + "/s")
    >>> keys = store.append_records(synthetic_criteo_rows(10), labels="label")
    >>> dm = ModynDataModule(store, batch_size=4, seed=1)
    >>> dm.set_training_set(keys)
    >>> loader = Loader(train_node(dm))
    >>> [len(batch.keys) for batch in loader]  # epoch 0
    [4, 4, 2]
    >>> it = iter(loader)  # epoch 1
    >>> (x, y), state = next(it), loader.state_dict()
    >>> sorted(x), y.shape
    (['cat', 'dense'], torch.Size([4]))
    >>> rest = [batch.keys.tolist() for batch in it]
    >>> loader.load_state_dict(state)
    >>> [batch.keys.tolist() for batch in loader] == rest
    True
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torchdata.nodes import BaseNode, Loader, ParallelMapper, PinMemory, Prefetcher

from lightning_modyn._checks import check_choice, check_int
from lightning_modyn.data.batch import KeyedBatch
from lightning_modyn.data.sampler import KeyBatch, SelectionSampler

if TYPE_CHECKING:
    from lightning_modyn.data.datamodule import ModynDataModule
    from lightning_modyn.data.dataset import KeyedBatchDataset

log = logging.getLogger(__name__)

_STATE_KEYS = ("epoch", "batches_done", "seed", "fingerprint", "num_batches")


class KeyBatchNode(BaseNode[KeyBatch]):
    """This rank's batch requests, epoch after epoch, in the order of a :class:`SelectionSampler`.

    ``reset()`` starts the epoch given to :meth:`set_epoch` since the last reset; without one, the next epoch once
    the current one's last batch was handed out, else the current epoch again from its start. So a ``Loader`` iterated
    epoch after epoch trains epoch after epoch, while an iterator made and dropped before its epoch ended (a
    probe, such as Lightning's check that a loader is iterable, whose workers have already read ahead) does not
    skip an epoch. ``reset(state)`` resumes the epoch in ``state`` after its first ``batches_done`` batches, and
    so does the next ``reset()`` after :meth:`resume` (when it starts that epoch).
    ``get_state()`` is ``sampler.state_dict(batches yielded)``, the same dict as ``ModynDataLoader.state_dict()``.

    Args:
        sampler: The order (e.g. from :meth:`ModynDataModule.train_parts`); this node sets its epoch.
    """

    def __init__(self, sampler: SelectionSampler) -> None:
        super().__init__()
        if not isinstance(sampler, SelectionSampler):
            raise TypeError(f"sampler must be a SelectionSampler (e.g. ModynDataModule.train_parts()[1]), got "
                            f"{type(sampler).__name__}")
        self.sampler = sampler
        self._it: Iterator[KeyBatch] | None = None
        self._batches_done = 0
        self._ended = False  # the current epoch's last batch was handed out
        self._batches = 0
        self._next_epoch: int | None = None
        self._resume: dict[str, Any] | None = None  # a state for the next reset() without one (resume())
        self.epoch_start: tuple[int, int] = (sampler.epoch, 0)  # (epoch, batches skipped) of the last reset


    def __len__(self) -> int:
        """Batches an epoch."""
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` at the next ``reset()`` without a state (Lightning calls it before every epoch through
        :class:`TrainLoader`'s ``sampler``)."""
        self._next_epoch = check_int("epoch", epoch, 0)

    def follow(self, epoch: int) -> None:
        """Start ``epoch`` at the next ``reset()`` unless :meth:`set_epoch` or :meth:`resume` chose what it starts
        (:class:`TrainLoader` passes the epoch that follows from the batches it handed out)."""
        if self._next_epoch is None and self._resume is None:
            self._next_epoch = check_int("epoch", epoch, 0)

    def resume(self, state: dict[str, Any]) -> None:
        """Resume the epoch in ``state`` (checked now) at the next ``reset()`` without a state, unless that reset
        starts another epoch (:meth:`set_epoch` chose one): what ``ModynDataLoader.load_state_dict`` does."""
        self._resume = self._checked(state)

    def reset(self, initial_state: dict[str, Any] | None = None) -> None:
        super().reset(initial_state)
        resume, self._resume = self._resume, None
        if initial_state is None and resume is not None and self._next_epoch in (None, resume["epoch"]):
            initial_state = resume
        if initial_state is not None:
            state = self._checked(initial_state)
            epoch, self._batches_done = state["epoch"], state["batches_done"]
        else:
            epoch = (self._next_epoch if self._next_epoch is not None
                     else self.sampler.epoch + 1 if self._ended else self.sampler.epoch)
            self._batches_done = 0
        if epoch != self.sampler.epoch:
            self.sampler.set_epoch(epoch)  # its next epoch is computed ahead from here
        self._next_epoch = None
        self._batches = len(self.sampler)
        self._ended = self._batches_done >= self._batches
        self.epoch_start = (epoch, self._batches_done)
        # the requests are slices of the epoch's share: skipping the first ones costs nothing
        self._it = itertools.islice(iter(self.sampler), self._batches_done, None)

    def next(self) -> KeyBatch:
        try:
            request = next(self._it)  # type: ignore[arg-type]
        except StopIteration:
            self._ended = True
            raise
        self._batches_done += 1
        self._ended = self._batches_done >= self._batches
        return request

    def get_state(self) -> dict[str, Any]:
        return self.sampler.state_dict(self._batches_done)

    def _checked(self, state: Any) -> dict[str, Any]:
        """``state`` if it resumes this node's order exactly; else a ``ValueError`` saying what differs."""
        if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
            raise ValueError(f"a KeyBatchNode state is a dict with {', '.join(_STATE_KEYS)} (from get_state() or "
                             f"ModynDataLoader.state_dict()), got {state!r}")
        if state["fingerprint"] != self.sampler.fingerprint:
            raise ValueError("the state was saved for a different training set (keys or weights changed); set the "
                             "same training set before resuming, or start afresh without the state")
        epoch = check_int("state['epoch']", state["epoch"], 0)
        batches = len(self.sampler)
        if state["num_batches"] != batches:
            raise ValueError(f"the state was saved for {state['num_batches']} batches an epoch, this node has "
                             f"{batches} (another batch size, number of ranks or drop_last)")
        if state["seed"] != self.sampler.seed:
            raise ValueError(f"the state was saved with seed {state['seed']}, this node's order has seed "
                             f"{self.sampler.seed}")
        done = check_int("state['batches_done']", state["batches_done"], 0, batches)
        return {**state, "epoch": epoch, "batches_done": done}


def train_node(datamodule: "ModynDataModule", num_workers: int = 0, method: str = "thread",
               multiprocessing_context: str | None = None, pin_memory: bool = False,
               prefetch_factor: int | None = None, num_replicas: int | None = None, rank: int | None = None,
               epoch: int | None = None) -> BaseNode[KeyedBatch]:
    """The training batches of ``datamodule`` as a torchdata node: its order, read by ``num_workers`` workers.

    Args:
        datamodule: A :class:`ModynDataModule` with a training set; its batch size, seed, shuffle, drop_last,
            locality window, decode and store are used.
        num_workers: Threads or processes fetching and decoding batches (``ParallelMapper``, in order); 0 reads
            in the consuming thread.
        method: ``"thread"`` (one store object shared: its reads take turns, decoding runs in parallel, so a
            decode function of one's own must be thread-safe) or
            ``"process"`` (each process reopens the store read-only; batches come back through torch's
            shared-memory pickling).
        multiprocessing_context: Start method for ``method="process"`` (default: torch's).
        pin_memory: Pin each batch for fast host-to-GPU copies (``PinMemory``; skipped, with a warning, without
            CUDA).
        prefetch_factor: Batches a ``Prefetcher`` thread keeps ready; default 2 with workers and none without,
            0 for none.
        num_replicas, rank: The rank's share to read (both or neither; default: the trainer's, or one rank).
        epoch: The first epoch (default: the trainer's current epoch, or 0); see :class:`KeyBatchNode` for the
            epochs that follow.
    """
    from lightning_modyn.data.datamodule import ModynDataModule  # the DataModule imports this module

    if not isinstance(datamodule, ModynDataModule):
        raise TypeError(f"datamodule must be a ModynDataModule, got {type(datamodule).__name__}")
    options = checked_loader_options(num_workers, method, multiprocessing_context, pin_memory, prefetch_factor)
    dataset, sampler = datamodule.train_parts(num_replicas, rank, epoch)
    return node_pipeline(dataset, sampler, *options)


def checked_loader_options(num_workers: Any, method: Any, multiprocessing_context: Any, pin_memory: Any,
                     prefetch_factor: Any) -> tuple[int, str, str | None, bool, int]:
    """:func:`train_node`'s worker options, checked (a ``ValueError`` naming a bad one), ``prefetch_factor``'s
    default filled in."""
    num_workers = check_int("num_workers", num_workers, 0)
    check_choice("method", method, ("thread", "process"))
    if multiprocessing_context is not None:
        check_choice("multiprocessing_context", multiprocessing_context, multiprocessing.get_all_start_methods(),
                     hint="or None")
    if not isinstance(pin_memory, bool):
        raise ValueError(f"pin_memory must be True or False, got {pin_memory!r}")
    if prefetch_factor is None:
        prefetch_factor = 2 if num_workers else 0
    prefetch_factor = check_int("prefetch_factor", prefetch_factor, 0, hint="(batches kept ready; 0: none)")
    return num_workers, method, multiprocessing_context, pin_memory, prefetch_factor


def node_pipeline(dataset: "KeyedBatchDataset", sampler: SelectionSampler, num_workers: int, method: str,
              multiprocessing_context: str | None, pin_memory: bool, prefetch_factor: int) -> BaseNode[KeyedBatch]:
    """``Prefetcher(PinMemory(ParallelMapper(KeyBatchNode(sampler), dataset.read)))``, each stage only when asked
    for (options as :func:`checked_loader_options` returns them): any of the DataModule's loaders in its thread mode."""
    keep_intra_op_threads()  # built in the training thread, as a rule
    node: BaseNode = ParallelMapper(KeyBatchNode(sampler), dataset.read, num_workers=num_workers, in_order=True,
                                    method=method, multiprocessing_context=multiprocessing_context)
    if pin_memory:
        if torch.cuda.is_available():
            node = PinMemory(node)
        else:
            log.warning("pin_memory=True: no CUDA device, so batches are not pinned")
    if prefetch_factor:
        node = Prefetcher(node, prefetch_factor=prefetch_factor)
    return node


class TrainLoader(Loader):
    """A torchdata ``Loader`` over a pipeline of :class:`KeyBatchNode` that Lightning drives as it does a DataLoader.

    It has a length (batches an epoch): Lightning fetches a batch ahead of the training step from an iterable
    without one, and would then save a state one batch ahead of what was trained. And its ``sampler`` is the
    pipeline's :class:`KeyBatchNode`, on which Lightning calls ``set_epoch`` before every epoch, so the epochs are
    the trainer's. Lightning saves and restores its ``state_dict`` in checkpoints by itself.

    Its state is that of :class:`ModynDataLoader` (``(epoch, batches handed out)`` and what identifies the order),
    not torchdata's nested one: batches are counted as they leave the loader, as ``ModynDataLoader`` counts them,
    so a checkpoint saved with either loader (``ModynDataModule(worker_mode="process" | "thread")``) resumes with
    the other, and a state does not depend on how the pipeline's stages read ahead. Those counts also choose the
    epoch of the next iterator when nobody set one: the next epoch once this loader handed out the last batch of
    the current one, else the current one again (iterating ``sampler`` itself leaves it alone).

    Args:
        root: A pipeline whose innermost source (through ``source`` attributes) is a :class:`KeyBatchNode`, e.g.
            :func:`train_node`'s.
    """

    #: A DataLoader's attribute, which Lightning reads from anything with a ``sampler``.
    batch_sampler = None

    def __init__(self, root: BaseNode[KeyedBatch]) -> None:
        super().__init__(root)
        self.sampler = _order_of(root)
        self._epoch, self._batches_done = self.sampler.epoch_start
        self._current: object = None  # the iterator whose batches are counted

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[KeyedBatch]:
        # lazy, as ModynDataLoader's: the pipeline is reset, and its epoch chosen, at the first batch. Lightning
        # makes the iterator of a fit's first epoch before it sets that epoch (a resumed fit's may not be the
        # checkpoint's), and probes that a loader is iterable with an iterator it never advances.
        keep_intra_op_threads()
        done = self._batches_done >= len(self.sampler)
        self.sampler.follow(self._epoch + 1 if done else self._epoch)
        it = super().__iter__()  # resets the pipeline, down to the KeyBatchNode, in this thread
        self._epoch, self._batches_done = self.sampler.epoch_start
        self._current = token = object()
        for batch in it:
            if self._current is token:  # not an iterator made before the last one started
                self._batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """``(epoch, batches handed out)`` of the last iterator, as ``ModynDataLoader.state_dict()``."""
        return {**self.sampler.sampler.state_dict(self._batches_done), "epoch": self._epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state`` (from :meth:`state_dict` or ``ModynDataLoader.state_dict()``) with the next
        iterator; a ``ValueError`` if it was saved for another training set, seed or number of batches."""
        self.sampler.resume(state)


def keep_intra_op_threads() -> int:
    """Fix the calling thread's number of torch intra-op threads at its current value; returns it.

    ``ParallelMapper``'s workers call ``torch.set_num_threads(1)`` as they start, which also sets the count that a
    thread takes on its first parallel torch operation. A training thread that had not run one yet (a script whose
    first such operation is in ``training_step``) would then train on one thread: measured here, a ~25 % slower
    conv-net step. Reading the count (``torch.get_num_threads()``) in the training thread before the workers start
    fixes it for that thread.
    """
    return torch.get_num_threads()


def _order_of(node: Any) -> KeyBatchNode:
    """The :class:`KeyBatchNode` at the bottom of a chain of nodes (each stage's ``source``)."""
    seen = node
    while not isinstance(node, KeyBatchNode):
        if not isinstance(node, BaseNode) or getattr(node, "source", None) is None:
            raise TypeError(f"a TrainLoader reads a pipeline over a KeyBatchNode (such as train_node's); "
                            f"{type(seen).__name__} has none")
        node = node.source
    return node


def train_loader(datamodule: "ModynDataModule", **options: Any) -> TrainLoader:
    """``TrainLoader(train_node(datamodule, **options))``: e.g. ``return train_loader(self, num_workers=2)`` from
    a DataModule's ``train_dataloader``."""
    return TrainLoader(train_node(datamodule, **options))


__all__ = ["KeyBatchNode", "TrainLoader", "keep_intra_op_threads", "train_loader", "train_node"]
