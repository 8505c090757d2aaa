"""The frames the server sends, as JSON text: replies, errors and events.

Task infos and events go out through ``storage.converter`` unchanged, so
the wire form of a ``TaskInfo`` or ``TaskEvent`` is the same as everywhere
else. Live events are encoded a committed batch at a time, straight from
the stored text and once for all subscribers (``EventEncoder``); the text is
spliced into ``event``/``events`` frames, so fan-out and batching cost no
re-encoding. Sans-IO: no trio, no sockets.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias

import storage
from storage import StoredEvent

from ..core._info import TaskEvent
from ..core._wire import ErrorCode, FrameKind

if TYPE_CHECKING:
    from ..runtime._events import EventBatch

#: The ``id`` of a request: echoed in its reply (None when the request had none).
RequestId: TypeAlias = str | int | None


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def to_wire(value: Any) -> Any:
    """The JSON-ready form of a result (TaskInfo, TaskEvent, lists, dicts...)."""
    return storage.converter.unstructure(value)


def reply_frame(request_id: RequestId, result: Any) -> str:
    """``{"id", "ok": true, "result"}``; result goes through ``to_wire``."""
    return _dumps({"id": request_id, "ok": True, "result": to_wire(result)})


def error_frame(request_id: RequestId, code: ErrorCode, message: str) -> str:
    """``{"id", "ok": false, "error": {"code", "message"}}``."""
    return _dumps(
        {"id": request_id, "ok": False, "error": {"code": code.value, "message": message}}
    )


def encode_event(event: TaskEvent) -> str:
    """The JSON text of one event: ``{"task_id", "seq", "kind", "at", "data"}``."""
    return _dumps(to_wire(event))


def encode_stored(stored: StoredEvent) -> str:
    """The JSON text of a stored event, the same as ``encode_event`` of it decoded.

    The stored ``data`` is already the compact JSON text of the value
    (``storage.encode``), so it is spliced in as it is: no decoding.
    """
    return _encode(_dumps(stored.task_id), stored.seq, _dumps(stored.kind), stored.at, stored.data)


def _encode(task_id: str, seq: int, kind: str, at: float, data: str) -> str:
    """One event's JSON text from its parts (task id and kind already JSON text)."""
    if not math.isfinite(at):
        raise ValueError(f"event {seq} of task {task_id}: no JSON form for at={at}")
    return f'{{"task_id":{task_id},"seq":{seq:d},"kind":{kind},"at":{at!r},"data":{data}}}'


class EncodedEvents(NamedTuple):
    """The JSON text of consecutive events, comma-separated, ready for an ``events`` frame.

    A named tuple rather than an attrs class: smaller, and cheaper for the
    garbage collector to walk (see ``runtime._batches.Wakeup``).
    """

    text: str
    #: Number of events in ``text``.
    event_count: int
    #: Seq of the last one.
    last_seq: int


class EventEncoder:
    """The wire text of event batches, made once per batch for every subscriber.

    Fan-out to N subscribers costs one encoding: the text of a batch is kept
    while the batch lives (it is shared by every subscriber that receives
    it), and each connection only splices it into its frame.

    Args:
        max_size: a batch longer than this many characters is cut into
            parts that are not (a single longer event is a part alone), so
            frames stay within what clients accept.
    """

    def __init__(self, max_size: int = 1 << 20) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self.max_size = max_size
        self._texts: weakref.WeakKeyDictionary[EventBatch, tuple[EncodedEvents, ...]] = (
            weakref.WeakKeyDictionary()
        )
        #: JSON text of the event kinds seen (a handful of short strings).
        self._kinds: dict[str, str] = {}

    def encode(self, batch: EventBatch) -> tuple[EncodedEvents, ...]:
        """The batch's events as JSON text, in parts of at most ``max_size`` characters."""
        encoded = self._texts.get(batch)
        if encoded is None:
            encoded = self._texts[batch] = self._encode(batch)
        return encoded

    def _encode(self, batch: EventBatch) -> tuple[EncodedEvents, ...]:
        task_id = _dumps(batch.task_id)
        kinds = self._kinds
        parts: list[EncodedEvents] = []
        texts: list[str] = []
        size = 0
        for seq, kind, at, data in zip(
            batch.seqs, batch.kinds, batch.ats, batch.datas, strict=True
        ):
            kind_text = kinds.get(kind)
            if kind_text is None:
                kind_text = _dumps(kind)
                if len(kinds) < 256:
                    kinds[kind] = kind_text
            text = _encode(task_id, seq, kind_text, at, data)
            if texts and size + 1 + len(text) > self.max_size:
                parts.append(EncodedEvents(",".join(texts), len(texts), seq - 1))
                texts = []
            size = size + 1 + len(text) if texts else len(text)  # len(",".join(texts))
            texts.append(text)
        parts.append(EncodedEvents(",".join(texts), len(texts), batch.last))
        return tuple(parts)


def _frame_head(kind: FrameKind) -> str:
    """The start of a subscription frame, ``{"op":"<kind>","sub":``, as JSON text."""
    return f'{{"op":{_dumps(kind.value)},"sub":'


# Event frames are spliced together from ready JSON text (the encoded events
# are shared by every subscriber): the same text ``_dumps`` would make, without
# building and encoding a dict per frame.
_EVENT_HEAD: Final = _frame_head(FrameKind.EVENT)
_EVENTS_HEAD: Final = _frame_head(FrameKind.EVENTS)


def events_frame(sub: str, encoded: Sequence[str], count: int) -> str:
    """``{"op": "event", "sub", "event"}`` for one event, else ``{"op": "events", "sub",
    "events": [...]}``, from ``count`` events in comma-separated texts (``EncodedEvents``)."""
    if not encoded or count < 1:
        raise ValueError("no events")
    if count == 1:
        return f'{_EVENT_HEAD}{_dumps(sub)},"event":{encoded[0]}}}'
    return f'{_EVENTS_HEAD}{_dumps(sub)},"events":[{",".join(encoded)}]}}'


def end_frame(sub: str) -> str:
    """``{"op": "end", "sub"}``: a one-task subscription sent its terminal event."""
    return _dumps({"op": FrameKind.END.value, "sub": sub})


def lagged_frame(sub: str, resume_after: int | Mapping[str, int]) -> str:
    """``{"op": "lagged", "sub", "resume_after"}``: the subscription is closed;
    subscribe again with ``after`` = resume_after (a seq for one task, an
    object task id -> seq for all tasks)."""
    after = resume_after if isinstance(resume_after, int) else dict(resume_after)
    return _dumps({"op": FrameKind.LAGGED.value, "sub": sub, "resume_after": after})
