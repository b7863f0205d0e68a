"""Property-based test: random interleavings of every store mutation keep every live key's exact bytes.

A hypothesis state machine drives append / append_records / ingest / delete / compact / reopen against a model
(a dict of key -> expected bytes) and checks after each step that every live key reads back exactly and every
deleted key raises ``DeletedKeyError``; shards ingested with or without ``hand_over``, and compaction never changes
the files that were not handed over (and warns exactly when deleted samples' bytes stay in them).
"""

from __future__ import annotations

import shutil
import tempfile
import warnings

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lightning_modyn.store import DeletedKeyError, SampleStore

RECORD = np.dtype([("label", "<i4"), ("x", "<f4", (3,)), ("tag", "u1")])  # 17 B: not a divisor of 512


class StoreMachine(RuleBasedStateMachine):
    catalog: str | None = None  # a PostgreSQL URL in the subclass run by test_store_properties_on_postgresql

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="lm-prop-")
        self.url = f"{self.dir}/store"
        self.samples: dict[int, bytes] = {}
        self.records: dict[int, bytes] = {}
        self.deleted: set[int] = set()
        self.user_files: dict[str, bytes] = {}  # ingested without hand_over: path -> bytes when ingested
        self.counter = 0

    @initialize(shard_max_samples=st.integers(1, 6), block_bytes=st.integers(17, 300))
    def create(self, shard_max_samples: int, block_bytes: int) -> None:
        self.store = SampleStore.create(self.url, shard_max_samples=shard_max_samples, block_bytes=block_bytes,
                                        catalog=self.catalog)

    def _payload(self, size: int) -> bytes:
        self.counter += 1
        return self.counter.to_bytes(4, "little") * (size // 4 + 1)

    @rule(sizes=st.lists(st.integers(0, 700), min_size=1, max_size=5))
    def append(self, sizes: list[int]) -> None:
        payloads = [self._payload(s)[:s] for s in sizes]
        keys = self.store.append([{"bin": p} for p in payloads])
        self.samples.update(zip(keys.tolist(), payloads))

    @rule(n=st.integers(1, 60))
    def append_records(self, n: int) -> None:
        rows = np.zeros(n, RECORD)
        rows["x"] = np.arange(self.counter, self.counter + 3 * n, dtype=np.float32).reshape(n, 3)
        rows["tag"] = np.arange(n) % 251
        self.counter += 3 * n
        keys = self.store.append_records(rows, labels="label")
        self.records.update(zip(keys.tolist(), (r.tobytes() for r in rows)))

    @rule(n=st.integers(1, 4), hand_over=st.booleans())
    def ingest(self, n: int, hand_over: bool) -> None:
        import webdataset as wds

        path = f"{self.dir}/ingest-{self.counter}.tar"
        payloads = [self._payload(37) for _ in range(n)]
        with wds.TarWriter(path) as sink:
            for i, p in enumerate(payloads):
                sink.write({"__key__": f"ing{self.counter}-{i}", "bin": p})
        keys = self.store.ingest([path], hand_over=hand_over)
        self.samples.update(zip(keys.tolist(), payloads))
        if not hand_over:  # the user's file: compaction must leave it exactly as it is
            with open(path, "rb") as handle:
                self.user_files[path] = handle.read()

    @precondition(lambda self: len(self.live()) > 0)
    @rule(data=st.data())
    def delete(self, data) -> None:
        live = sorted(self.live())
        victims = data.draw(st.lists(st.sampled_from(live), min_size=1, max_size=min(8, len(live))))
        self.store.delete(victims)
        self.deleted.update(victims)

    @rule()
    def compact(self) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = self.store.compact()
        kept = [str(w.message) for w in caught if "are still in" in str(w.message)]
        assert bool(kept) == (stats["shards_not_owned"] > 0)
        for path, data in self.user_files.items():
            with open(path, "rb") as handle:
                assert handle.read() == data, f"compact() changed the user's file {path}"

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = SampleStore.open(self.url)

    def live(self) -> set[int]:
        return (set(self.samples) | set(self.records)) - self.deleted

    @invariant()
    def every_live_key_reads_back_exactly(self) -> None:
        if not hasattr(self, "store"):
            return
        live_samples = sorted(set(self.samples) - self.deleted)
        if live_samples:
            got = self.store.get(live_samples[::-1])
            assert [g["bin"] for g in got] == [self.samples[k] for k in live_samples[::-1]]
            assert self.store.get_member(live_samples[::-1], "bin").tolist() == [g["bin"] for g in got]
            order = self.store.read_order(live_samples[::-1])
            assert sorted(order.tolist()) == list(range(len(live_samples)))
            regrouped = np.asarray(live_samples[::-1])[order]
            assert self.store.get_member(regrouped, "bin").tolist() == [self.samples[k] for k in regrouped.tolist()]
        live_records = sorted(set(self.records) - self.deleted)
        if live_records:
            rows = self.store.get_records(live_records)
            assert [r.tobytes() for r in rows] == [self.records[k] for k in live_records]
            regrouped = np.asarray(live_records[::-1])[self.store.read_order(live_records[::-1])]
            assert sorted(regrouped.tolist()) == live_records
            assert [r.tobytes() for r in self.store.get_records(regrouped)] == [self.records[k] for k in regrouped]
        assert len(self.store) == len(live_samples) + len(live_records)
        assert self.store.all().keys.tolist() == sorted(live_samples + live_records)

    @invariant()
    def every_deleted_key_errors(self) -> None:
        if not hasattr(self, "store"):
            return
        for key in sorted(self.deleted)[:5]:
            try:
                self.store.get([key])
            except DeletedKeyError:
                continue
            raise AssertionError(f"deleted key {key} was readable")

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


StoreMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestStoreProperties = StoreMachine.TestCase


def test_store_properties_on_postgresql(postgres_url):
    """The same random sequences of appends, ingests, deletes and compactions, on a PostgreSQL catalog."""
    from hypothesis.stateful import run_state_machine_as_test

    class PostgresMachine(StoreMachine):
        catalog = postgres_url

    run_state_machine_as_test(PostgresMachine, settings=settings(
        max_examples=15, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]))
