"""The fence and compare-and-set decision: whether a store may apply a write.

Theory of operation
-------------------
Every backend decides with these functions, on plain values it holds (a
record's fields, a row's columns), so that the rules are written once and
two backends cannot drift apart. They are pure: no trio, no I/O, no clock
(``now`` is the batch's time, see ``_commands.py``). A refusal is returned,
not raised: the ``StorageError`` instance the backend raises (or records as
the command's outcome); None means "allowed". They run for every write, so
the allowed path allocates nothing and calls nothing.

A task that a command names must exist: a backend looks it up first and
refuses a missing one with ``RecordNotFoundError`` (``UpdateStatus``
answers None instead, ``CreateTask`` creates it); the functions below decide
on a task that exists.

Leases. A task's lease ``lease_expires`` holds through its expiry instant:
it holds at ``now`` when ``lease_expires >= now`` (``lease_holds``), and
has expired when ``lease_expires < now``. No lease (None) never holds.

``TaskWrite`` (``decide_task_write``), in this order:

1. ``epoch`` given (a fenced write): refused with ``StaleEpochError`` unless
   the task is at that very epoch *and* its lease holds at ``now``. A
   released task (no lease) refuses every fenced write: its writer let go.
   ``epoch`` None (an external cancel, an admin fix) ignores ownership.
2. ``expect`` given: refused with ``ConflictError`` unless the task's state
   is one of them (an empty set refuses everything).

``ClaimTask`` (``decide_claim``), in this order:

1. ``states`` given: refused with ``ConflictError`` unless the task's state
   is one of them.
2. Refused with ``LeaseHeldError`` when another node owns the task and its
   lease holds, unless ``force``. The task is ``claimable`` by ``node_id``
   when it has no owner, ``node_id`` owns it already (a restart is a change
   of hands too), or its lease has expired (or is None).

An allowed claim sets owner and lease and grows the epoch by one, which
fences off every write of the previous owner.

``RenewLeases`` and ``ReleaseTasks`` act on the tasks ``owned_by`` the node
(its owner is the node, whether or not the lease has lapsed meanwhile: a
lapsed lease nobody claimed leaves the epoch as it was). A renewal by a node
that owns nothing renews nothing. SQLite says the same predicate in SQL
(``WHERE owner = ?``), and its ``list_claimable`` query says ``claimable``.

Keyed state. A state set with a TTL of ``ttl`` seconds expires at
``now + ttl`` (``key_expires_at``; None: never), and is gone from its
expiry instant on: it is alive at ``now`` when ``expires_at > now``
(``key_state_alive``). An expired key reads as missing, state None.

``CompareAndSetKeyState`` (``decide_compare_and_set``): sets when the
current state (None if missing or expired) equals ``expected``; with
``negate``, when it does not, so a missing or expired key is set by a
negated compare-and-set and never by a plain one.

``UpdateStatus`` is unfenced: it reports a row as changed whenever the task
exists, even when its state was already the one asked for (the seed's
``update_status``: the row was written).
"""

from __future__ import annotations

from ._errors import ConflictError, LeaseHeldError, StaleEpochError, StorageError
from ._records import TaskState


def lease_holds(lease_expires: float | None, now: float) -> bool:
    """Whether a lease expiring at ``lease_expires`` holds at ``now``."""
    return lease_expires is not None and lease_expires >= now


def decide_task_write(
    task_id: str,
    state: TaskState,
    epoch: int,
    lease_expires: float | None,
    write_epoch: int | None,
    expect: frozenset[TaskState] | None,
    now: float,
) -> StorageError | None:
    """The refusal of a ``TaskWrite`` to an existing task, or None to apply it.

    Args:
        task_id: the task's id (for the error).
        state, epoch, lease_expires: the task as stored.
        write_epoch: the write's ``epoch`` (None: unfenced).
        expect: the write's ``expect`` (None: any state).
        now: the batch's time.

    Returns:
        ``StaleEpochError``, ``ConflictError``, or None; see the module docstring.
    """
    # (lease_holds, inlined: this runs for every write)
    if write_epoch is not None and (
        write_epoch != epoch or lease_expires is None or lease_expires < now
    ):
        return StaleEpochError(task_id, write_epoch, epoch)
    if expect is not None and state not in expect:
        return ConflictError(task_id, _values(expect), state.value)
    return None


def claimable(owner: str | None, lease_expires: float | None, node_id: str, now: float) -> bool:
    """Whether ``node_id`` may claim a task with this owner and lease (no force)."""
    return (
        owner is None
        or owner == node_id
        or lease_expires is None
        or lease_expires < now  # (not lease_holds)
    )


def decide_claim(
    task_id: str,
    state: TaskState,
    owner: str | None,
    lease_expires: float | None,
    node_id: str,
    states: frozenset[TaskState] | None,
    force: bool,
    now: float,
) -> StorageError | None:
    """The refusal of a ``ClaimTask`` of an existing task, or None to claim it.

    Args:
        task_id: the task's id (for the error).
        state, owner, lease_expires: the task as stored.
        node_id, states, force: the claim's.
        now: the batch's time.

    Returns:
        ``ConflictError``, ``LeaseHeldError``, or None; see the module docstring.
    """
    if states is not None and state not in states:
        return ConflictError(task_id, _values(states), state.value)
    if not force and not claimable(owner, lease_expires, node_id, now):
        assert owner is not None and lease_expires is not None
        return LeaseHeldError(task_id, owner, lease_expires)
    return None


def owned_by(owner: str | None, node_id: str) -> bool:
    """Whether ``RenewLeases``/``ReleaseTasks`` of ``node_id`` act on a task
    with this owner."""
    return owner == node_id


def key_expires_at(now: float, ttl: float | None) -> float | None:
    """When a keyed state set at ``now`` with ``ttl`` seconds expires (None: never)."""
    return None if ttl is None else now + ttl


def key_state_alive(expires_at: float | None, now: float) -> bool:
    """Whether a keyed state expiring at ``expires_at`` is still there at ``now``."""
    return expires_at is None or expires_at > now


def decide_compare_and_set(
    current: str | None,
    expires_at: float | None,
    now: float,
    expected: str,
    negate: bool,
) -> bool:
    """Whether a ``CompareAndSetKeyState`` sets the key.

    Args:
        current: the key's stored state, None if there is no such key.
        expires_at: its expiry as stored (None: never).
        now: the batch's time.
        expected, negate: the command's ``expected_state`` and ``negate``.
    """
    if current is not None and expires_at is not None and expires_at <= now:
        current = None  # expired: as if missing (not key_state_alive)
    return (current == expected) != negate


def _values(states: frozenset[TaskState]) -> frozenset[str]:
    return frozenset(state.value for state in states)
