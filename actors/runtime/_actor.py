"""TaskActor: one trio task per live task, driving the lifecycle.

Theory of operation
-------------------
An actor owns one task while the task needs it (pending or running, or while
a message for it is handled). It is one trio task (``serve``) that runs the
task's *runs* one after the other: the handler, with its retries, inside the
run's own cancel scope. Between runs, and once the last run is over, it
decides under its lock whether to start the next run, or to end.

Messages (a Request, a signal, a cancel) are handled by the task that sends
them, holding the actor's ``ActorLock``: the lock is the mailbox (first
come, first served), and a message is handled whole, start to finish, even
if its sender is cancelled meanwhile. Everything that moves the task (the
transitions of runs and of messages) happens under that lock, as a write
fenced by the actor's epoch and guarded by a compare-and-set on the state
the actor believes in, committed before the lock is released; so a run
finishing and a Cancel arriving are serialized, and whichever is first
wins. (A run's START is the one such write its writer does not await: the
handler starts at once, the lock stays held until the START commits, and
the START shares a draft with what the run writes first.) Cancel, STOP
and the interrupt strategies cancel the run's scope *before* they write:
the handler is interrupted at once, inside whatever step it is in. A
message that ends the run and starts another (a STOP with a queued
Request, an interrupt, a RESUME) leaves the next run's Request in
``_next``; the actor starts it as soon as the old run has unwound.

Writes that do not move the task (events, progress, usage, step results,
recorded values) are added to the actor's open ``TaskDraft``: one storage
command that grows until the storage actor takes it, so a task costs one
command per batch however much it writes (issue #5). They need no lock: a
run writes only while its scope is live, and whoever ends a run cancels its
scope before writing. A step result is awaited (``_commit``): the draft
that holds it is durable before the next step starts, and with it every
event queued before. Drafts are resolved in commit order, and the record
each returns becomes ``self.record`` right then.

When the last run is over and the task is paused, stopped or waiting for
input, the actor *passivates*: it leaves the runtime's table, lets go of its
ownership and ends; the store holds everything, and the next message
revives the task (a new actor, a new epoch) which replays the handler from
its journal. A terminal task leaves no actor behind either.

If a fenced write is refused (another node took the task over) or the state
was changed under the actor (an unfenced cancel from elsewhere), the actor
stops at once without writing anything else; a caller handling a message
then gets ActorStoppedError.

The actor is built in layers, one module each: ``_drafts.ActorCore`` (its
state and its writes), ``_calls.ActorCalls`` (what a handler's context
asks), ``_mailbox.Mailbox`` (messages and the multitask strategies) and
``_run.RunLoop`` (runs, retries, passivation). The runtime sees it through
``_supervisor.Supervisor`` only.
"""

from __future__ import annotations

from ._drafts import ActorGone as ActorGone
from ._mailbox import Mailbox
from ._run import RunLoop

__all__ = ["ActorGone", "TaskActor"]


class TaskActor(RunLoop, Mailbox):
    """The live actor of one task. Made and started by the runtime only."""

    __slots__ = ()
