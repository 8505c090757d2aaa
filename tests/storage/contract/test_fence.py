"""The fence and compare-and-set decision: one case table, checked twice.

First on the pure functions of ``storage.model._fence`` (no trio, no store),
then case for case through the store contract on every backend of
``contract/conftest.BACKENDS``: a backend that decided otherwise than the functions
would fail here, whatever the code it runs.

A task's ownership in a case is one of:

- ``unowned``: as created (epoch 0, no owner, no lease);
- ``live``: claimed twice by node-a (epoch 2), its lease holds;
- ``expired``: the same, its lease expired a second ago;
- ``released``: the same, then released by node-a (no owner, no lease).
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import trio
import trio.testing

import storage
from storage import (
    ClaimTask,
    ConflictError,
    LeaseHeldError,
    StaleEpochError,
    StorageError,
    TaskRecord,
    TaskState,
    TaskWrite,
)
from storage.model import (
    claimable,
    decide_claim,
    decide_compare_and_set,
    decide_task_write,
    key_expires_at,
    key_state_alive,
    lease_holds,
    owned_by,
)

NOW = 1_000.0
LEASE = 60.0
PENDING = frozenset({TaskState.PENDING})
RUNNING = frozenset({TaskState.RUNNING})


class Ownership(NamedTuple):
    """A task's fence fields at NOW, as a backend holds them."""

    owner: str | None
    lease_expires: float | None
    epoch: int


OWNERSHIP = {
    "unowned": Ownership(None, None, 0),
    "live": Ownership("node-a", NOW + LEASE, 2),
    "expired": Ownership("node-a", NOW - 1, 2),
    "released": Ownership(None, None, 2),
}


class WriteCase(NamedTuple):
    name: str
    ownership: str
    #: "current", "stale" (one less), "newer" (one more) or None (unfenced).
    epoch: str | None
    expect: frozenset[TaskState] | None
    refused: type[StorageError] | None


WRITE_CASES = [
    WriteCase("unfenced write to an unowned task", "unowned", None, None, None),
    WriteCase("unfenced write ignores the owner", "live", None, None, None),
    WriteCase("unfenced write ignores an expired lease", "expired", None, None, None),
    WriteCase("current epoch and a live lease", "live", "current", None, None),
    WriteCase("stale epoch", "live", "stale", None, StaleEpochError),
    WriteCase("epoch from the future", "live", "newer", None, StaleEpochError),
    WriteCase("current epoch after the lease expired", "expired", "current", None, StaleEpochError),
    WriteCase("current epoch of a released task", "released", "current", None, StaleEpochError),
    WriteCase("fenced write to a task never claimed", "unowned", "current", None, StaleEpochError),
    WriteCase("expected state", "live", None, PENDING, None),
    WriteCase("one of the expected states", "live", None, PENDING | RUNNING, None),
    WriteCase("unexpected state", "live", None, RUNNING, ConflictError),
    WriteCase("no state expected at all", "unowned", None, frozenset(), ConflictError),
    WriteCase("fenced and expected", "live", "current", PENDING, None),
    WriteCase("the epoch is checked before the state", "live", "stale", RUNNING, StaleEpochError),
]


class ClaimCase(NamedTuple):
    name: str
    ownership: str
    node_id: str
    states: frozenset[TaskState] | None
    force: bool
    refused: type[StorageError] | None


CLAIM_CASES = [
    ClaimCase("an unowned task", "unowned", "node-b", None, False, None),
    ClaimCase("its own task again", "live", "node-a", None, False, None),
    ClaimCase("a task another node holds", "live", "node-b", None, False, LeaseHeldError),
    ClaimCase("a task whose lease expired", "expired", "node-b", None, False, None),
    ClaimCase("a released task", "released", "node-b", None, False, None),
    ClaimCase("a held task, forced", "live", "node-b", None, True, None),
    ClaimCase("a listed state", "unowned", "node-b", PENDING, False, None),
    ClaimCase("an unlisted state", "unowned", "node-b", RUNNING, False, ConflictError),
    ClaimCase("an unlisted state, forced", "live", "node-b", RUNNING, True, ConflictError),
    ClaimCase("the state is checked first", "live", "node-b", RUNNING, False, ConflictError),
    ClaimCase("a listed state, held", "live", "node-b", PENDING, False, LeaseHeldError),
]


class RenewCase(NamedTuple):
    name: str
    ownership: str
    node_id: str
    renewed: bool


RENEW_CASES = [
    RenewCase("by the owner", "live", "node-a", True),
    RenewCase("by another node", "live", "node-b", False),
    RenewCase("by the owner of a lapsed lease nobody claimed", "expired", "node-a", True),
    RenewCase("of an unowned task", "unowned", "node-a", False),
    RenewCase("of a released task", "released", "node-a", False),
]


class CompareAndSetCase(NamedTuple):
    name: str
    #: The key's state, or None for no key.
    stored: TaskState | None
    #: Its TTL when set at NOW (None: no expiry).
    ttl: float | None
    #: Seconds from NOW to the compare-and-set.
    elapsed: float
    expected: TaskState
    negate: bool
    sets: bool


R, P = TaskState.RUNNING, TaskState.PAUSED
CAS_CASES = [
    CompareAndSetCase("equal", R, None, 0, R, False, True),
    CompareAndSetCase("not equal", P, None, 0, R, False, False),
    CompareAndSetCase("negate, equal", R, None, 0, R, True, False),
    CompareAndSetCase("negate, not equal", P, None, 0, R, True, True),
    CompareAndSetCase("missing", None, None, 0, R, False, False),
    CompareAndSetCase("negate, missing", None, None, 0, R, True, True),
    CompareAndSetCase("equal, TTL not run out", R, 5, 1, R, False, True),
    CompareAndSetCase("expired", R, 5, 6, R, False, False),
    CompareAndSetCase("negate, expired", R, 5, 6, R, True, True),
    CompareAndSetCase("negate, not equal, expired", P, 5, 6, R, True, True),
]


def _ids(
    cases: list[WriteCase] | list[ClaimCase] | list[RenewCase] | list[CompareAndSetCase],
) -> list[str]:
    return [case.name for case in cases]


def _write_epoch(case: WriteCase, epoch: int) -> int | None:
    offsets = {"current": 0, "stale": -1, "newer": 1}
    return None if case.epoch is None else epoch + offsets[case.epoch]


# -- (a) the pure functions ----------------------------------------------------


@pytest.mark.parametrize("case", WRITE_CASES, ids=_ids(WRITE_CASES))
def test_decide_task_write(case: WriteCase) -> None:
    _, lease, epoch = OWNERSHIP[case.ownership]
    write_epoch = _write_epoch(case, epoch)
    refusal = decide_task_write(
        "t1", TaskState.PENDING, epoch, lease, write_epoch, case.expect, NOW
    )
    if case.refused is None:
        assert refusal is None
        return
    assert type(refusal) is case.refused
    if isinstance(refusal, StaleEpochError):
        assert (refusal.task_id, refusal.epoch, refusal.current_epoch) == ("t1", write_epoch, epoch)
    if isinstance(refusal, ConflictError):
        assert case.expect is not None
        assert refusal.expected == frozenset(state.value for state in case.expect)
        assert (refusal.task_id, refusal.actual) == ("t1", "pending")


def test_a_lease_holds_through_its_expiry_instant() -> None:
    assert decide_task_write("t1", TaskState.PENDING, 2, NOW, 2, None, NOW) is None
    assert isinstance(
        decide_task_write("t1", TaskState.PENDING, 2, NOW, 2, None, NOW + 1e-6), StaleEpochError
    )
    assert isinstance(
        decide_claim("t1", TaskState.PENDING, "a", NOW, "b", None, False, NOW), LeaseHeldError
    )
    assert decide_claim("t1", TaskState.PENDING, "a", NOW, "b", None, False, NOW + 1e-6) is None
    assert lease_holds(NOW, NOW)
    assert not lease_holds(NOW, NOW + 1e-6)
    assert not lease_holds(None, NOW)


@pytest.mark.parametrize("case", CLAIM_CASES, ids=_ids(CLAIM_CASES))
def test_decide_claim(case: ClaimCase) -> None:
    owner, lease, _ = OWNERSHIP[case.ownership]
    refusal = decide_claim(
        "t1", TaskState.PENDING, owner, lease, case.node_id, case.states, case.force, NOW
    )
    if case.refused is None:
        assert refusal is None
    else:
        assert type(refusal) is case.refused
    if isinstance(refusal, LeaseHeldError):
        assert (refusal.task_id, refusal.owner, refusal.lease_expires) == ("t1", owner, lease)
    if isinstance(refusal, ConflictError):
        assert (refusal.expected, refusal.actual) == (frozenset({"running"}), "pending")
    if case.states is None and not case.force:
        # claimable is the claim's lease rule alone.
        assert claimable(owner, lease, case.node_id, NOW) == (refusal is None)


@pytest.mark.parametrize("case", RENEW_CASES, ids=_ids(RENEW_CASES))
def test_owned_by(case: RenewCase) -> None:
    owner, _, _ = OWNERSHIP[case.ownership]
    assert owned_by(owner, case.node_id) is case.renewed


@pytest.mark.parametrize("case", CAS_CASES, ids=_ids(CAS_CASES))
def test_decide_compare_and_set(case: CompareAndSetCase) -> None:
    current = None if case.stored is None else case.stored.value
    expires_at = None if case.stored is None else key_expires_at(NOW, case.ttl)
    now = NOW + case.elapsed
    sets = decide_compare_and_set(current, expires_at, now, case.expected.value, case.negate)
    assert sets is case.sets


def test_a_keyed_state_is_gone_from_its_expiry_instant() -> None:
    assert key_expires_at(NOW, None) is None
    assert key_expires_at(NOW, 5) == NOW + 5
    assert key_state_alive(None, NOW)
    assert key_state_alive(NOW, NOW - 1e-6)
    assert not key_state_alive(NOW, NOW)
    assert not decide_compare_and_set("running", NOW, NOW, "running", False)
    assert decide_compare_and_set("running", NOW, NOW, "running", True)


# -- (b) the same cases through the store, on every backend ---------------------


def _task(task_id: str) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        name="job",
        state=TaskState.PENDING,
        input="{}",
        created_at=NOW,
        updated_at=NOW,
        root_id=task_id,
    )


async def _owned(store: storage.Store, ownership: str) -> TaskRecord:
    """Task t1, owned as ``ownership`` says (see the module docstring)."""
    assert (await store.put_task(_task("t1"))).created
    if ownership != "unowned":
        lease = 10.0 if ownership == "expired" else LEASE
        await store.claim_task("t1", "node-a", lease=lease)
        await store.claim_task("t1", "node-a", lease=lease)
        if ownership == "expired":
            await trio.sleep(11)
        elif ownership == "released":
            assert await store.release_tasks("node-a") == 1
    record = await store.get_task("t1")
    assert record is not None
    expected = OWNERSHIP[ownership]
    assert (record.owner, record.epoch) == (expected.owner, expected.epoch)
    assert (record.lease_expires is None) == (expected.lease_expires is None)
    return record


async def test_a_write_for_a_missing_task_is_refused(store: storage.Store) -> None:
    with pytest.raises(storage.RecordNotFoundError):
        await store.write(TaskWrite("nope", state=TaskState.RUNNING))
    with pytest.raises(storage.RecordNotFoundError):
        await store.write(TaskWrite("nope", epoch=1, expect=PENDING))
    with pytest.raises(storage.RecordNotFoundError):
        await store.claim_task("nope", "node-a", lease=LEASE)
    assert not await store.update_status("nope", TaskState.RUNNING)


@pytest.mark.parametrize("case", WRITE_CASES, ids=_ids(WRITE_CASES))
async def test_store_task_write(
    store: storage.Store, autojump_clock: trio.testing.MockClock, case: WriteCase
) -> None:
    before = await _owned(store, case.ownership)
    write = TaskWrite(
        "t1",
        epoch=_write_epoch(case, before.epoch),
        expect=case.expect,
        state=TaskState.RUNNING,
    )
    if case.refused is None:
        assert (await store.write(write)).record.state is TaskState.RUNNING
        return
    with pytest.raises(case.refused):
        await store.write(write)
    assert await store.get_task("t1") == before


@pytest.mark.parametrize("case", CLAIM_CASES, ids=_ids(CLAIM_CASES))
async def test_store_claim(
    store: storage.Store, autojump_clock: trio.testing.MockClock, case: ClaimCase
) -> None:
    before = await _owned(store, case.ownership)
    claim = ClaimTask("t1", case.node_id, store.clock.now() + LEASE, case.states, case.force)
    if case.refused is None:
        claimed = await store.execute(claim)
        assert (claimed.owner, claimed.epoch) == (case.node_id, before.epoch + 1)
        assert claimed.lease_expires == claim.lease_until
        return
    with pytest.raises(case.refused):
        await store.execute(claim)
    assert await store.get_task("t1") == before


@pytest.mark.parametrize("case", RENEW_CASES, ids=_ids(RENEW_CASES))
async def test_store_renew_leases(
    store: storage.Store, autojump_clock: trio.testing.MockClock, case: RenewCase
) -> None:
    before = await _owned(store, case.ownership)
    count = await store.renew_leases(case.node_id, lease=LEASE)
    after = await store.get_task("t1")
    assert after is not None
    assert count == int(case.renewed)
    if case.renewed:
        assert after.lease_expires == store.clock.now() + LEASE
        assert after.epoch == before.epoch  # a renewal is not a change of hands
    else:
        assert after == before


@pytest.mark.parametrize("case", RENEW_CASES, ids=_ids(RENEW_CASES))
async def test_store_release_tasks(
    store: storage.Store, autojump_clock: trio.testing.MockClock, case: RenewCase
) -> None:
    before = await _owned(store, case.ownership)
    count = await store.release_tasks(case.node_id, ["t1"])
    after = await store.get_task("t1")
    assert after is not None
    assert count == int(case.renewed)
    if case.renewed:
        assert (after.owner, after.lease_expires, after.epoch) == (None, None, before.epoch)
    else:
        assert after == before


async def test_store_update_status_reports_an_unchanged_state_as_written(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await _owned(store, "live")
    assert await store.update_status("t1", TaskState.PENDING)


@pytest.mark.parametrize("case", CAS_CASES, ids=_ids(CAS_CASES))
async def test_store_compare_and_set(
    store: storage.Store, autojump_clock: trio.testing.MockClock, case: CompareAndSetCase
) -> None:
    if case.stored is not None:
        await store.set_task_state("k", case.stored, ttl=case.ttl)
    await trio.sleep(case.elapsed)
    changed = await store.compare_and_set_state(
        "k", TaskState.STOPPED, case.expected, negate=case.negate, ttl=None
    )
    assert changed is case.sets
    alive = case.stored is not None and (case.ttl is None or case.elapsed < case.ttl)
    left = TaskState.STOPPED if case.sets else (case.stored if alive else None)
    assert await store.get_task_state("k") is left
