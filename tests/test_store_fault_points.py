"""Crash safety at placed points: a writer killed (SIGKILL) before every low-level step of every write path (and
after every catalog commit), plus a few random times, leaves a store in which nothing acknowledged is lost, nothing
is half-visible, no debris stays, the user's files are untouched and no deleted bytes are forgotten.

The harness is ``tests/store_fault_harness.py``; ``python tests/store_fault_harness.py --report`` runs the full
campaign and prints the table for the docs.
"""

from __future__ import annotations

import os
import shutil

import pytest

import store_fault_harness as harness

pytestmark = pytest.mark.slow

RANDOM_KILLS = 12  # per operation, besides the placed points


@pytest.mark.parametrize("op", list(harness.OPERATIONS))
def test_kill_at_every_placed_point(op, tmp_path):
    spec = harness.OPERATIONS[op]
    camp = harness.run_campaign(op, str(tmp_path), random_kills=RANDOM_KILLS, seed=sorted(harness.OPERATIONS).index(op),
                                thin_writes=False)
    # coverage: every step the uninterrupted run took was a kill point, and enough of them were hit
    assert not camp.not_reached, f"{op}: placed points the killed runs did not reach: {camp.not_reached}"
    assert camp.points_hit >= spec.min_points, (
        f"{op}: only {camp.points_hit} placed points hit (want >= {spec.min_points}); steps: {camp.dry_trace}")
    missing = [kind for kind in spec.kinds if not camp.kinds_hit[kind]]
    assert not missing, f"{op}: no kill before a step of kind {missing}; kinds hit: {dict(camp.kinds_hit)}"
    assert camp.random_kills == RANDOM_KILLS
    # every invariant after every kill (and after the uninterrupted run)
    if camp.dry_findings or camp.findings:
        pytest.fail(harness.format_findings(camp), pytrace=False)
    assert camp.acked > 0 or op == "create"


def test_checks_catch_damage(tmp_path):
    """The checks are not vacuous: damage of each kind done by hand to a compacted store is found."""
    world, template = harness.build_template("compact", str(tmp_path))
    harness._fresh_case(world, template)
    ok = harness._fork_and_kill(world, harness._op_compact, None)
    assert ok.done is not None, ok.error
    findings, _acked, _stats = harness.check_after_kill(world, ok)  # (it also compacts: damage starts from there)
    assert not findings, f"the undamaged store already fails the checks: {findings}"
    shards = os.path.join(world.url, "shards")
    snapshot = str(tmp_path / "compacted")
    shutil.copytree(world.case, snapshot)

    def damaged(damage) -> set[str]:
        shutil.rmtree(world.case)
        shutil.copytree(snapshot, world.case)
        damage()
        return {f.category for f in harness.check_after_kill(world, ok)[0]}

    def cut_a_shard():
        ours = sorted(n for n in os.listdir(shards) if n.startswith("shard-") and n not in harness.FOREIGN)
        with open(os.path.join(shards, ours[0]), "r+b") as handle:
            handle.truncate(100)

    def leave_pending_file():  # (the store's own .tmp- files it may remove; this it does not know)
        os.makedirs(os.path.join(world.url, "pending"))
        with open(os.path.join(world.url, "pending", "shard-000123.tar"), "wb") as handle:
            handle.write(b"x")

    def change_user_file():
        with open(world.foreign_paths[0], "ab") as handle:
            handle.write(b"!")

    def keep_deleted_bytes():
        uid = next(iter(world.deleted.values()))
        with open(os.path.join(world.url, "notes.bin"), "wb") as handle:
            handle.write(world.marker(uid))

    assert "lost" in damaged(cut_a_shard)
    assert "debris" in damaged(leave_pending_file)
    assert "user_files" in damaged(change_user_file)
    assert "deleted_bytes" in damaged(keep_deleted_bytes)
