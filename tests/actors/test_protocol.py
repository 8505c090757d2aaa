"""The websocket protocol without sockets: parsing, frames, error codes, the outbox.

``actors.server._protocol`` is sans-IO (tested without trio); ``actors.server._outbox`` is
the bounded coalescing send queue of a connection (tested with trio events
only, no sockets).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

import actors
import storage
from actors import Signal, TaskState
from actors.core._lifecycle import Strategy
from actors.runtime._events import EventBatch
from actors.server._outbox import Outbox
from actors.server._protocol import (
    ERROR_CODES,
    MAX_DEPTH,
    OPERATIONS,
    Auth,
    Cancel,
    ErrorCode,
    EventEncoder,
    Get,
    History,
    ListTasks,
    ProtocolError,
    Send,
    SignalTask,
    Submit,
    Subscribe,
    Unsubscribe,
    Usage,
    encode_event,
    encode_stored,
    end_frame,
    error_code,
    error_frame,
    events_frame,
    lagged_frame,
    parse_frame,
    reply_frame,
)


def parse(**frame: Any) -> Any:
    return parse_frame(json.dumps(frame)).op


# -- parsing ------------------------------------------------------------------------------
def test_every_op_parses_into_its_typed_request() -> None:
    assert parse(op="auth", token="t") == Auth("t")
    assert parse(op="submit", name="n", input=[1], thread_id="t", strategy="reject") == Submit(
        "n", [1], thread_id="t", strategy=Strategy.REJECT
    )
    assert parse(op="send", task_id="a", input=None) == Send("a", None)
    assert parse(op="cancel", task_id="a", reason="r") == Cancel("a", "r")
    assert parse(op="signal", task_id="a", signal="pause") == SignalTask("a", Signal.PAUSE)
    assert parse(op="get", task_id="a") == Get("a")
    assert parse(op="list", states=["running"], limit=2) == ListTasks(
        states=(TaskState.RUNNING,), limit=2
    )
    assert parse(op="history", task_id="a", after=3) == History("a", 3)
    assert parse(op="subscribe", task_id="a", after=4) == Subscribe("a", 4)
    assert parse(op="subscribe", after={"a": 1}) == Subscribe(None, {"a": 1})
    assert parse(op="unsubscribe", sub="s1") == Unsubscribe("s1")
    assert parse(op="usage", thread_id="t") == Usage("t")
    assert set(OPERATIONS) == {
        "auth",
        "submit",
        "send",
        "cancel",
        "signal",
        "get",
        "list",
        "history",
        "subscribe",
        "unsubscribe",
        "usage",
    }


def test_the_request_id_is_echoed_when_it_can_be_read() -> None:
    assert parse_frame('{"id": "x", "op": "list"}').id == "x"
    assert parse_frame('{"id": 7, "op": "list"}').id == 7
    assert parse_frame('{"op": "list"}').id is None
    with pytest.raises(ProtocolError) as error:
        parse_frame('{"id": 9, "op": "get", "task_id": 1}')
    assert error.value.request_id == 9


@pytest.mark.parametrize(
    ("frame", "code", "message"),
    [
        ("{", ErrorCode.BAD_JSON, "malformed JSON"),
        ("[" * 100_000, ErrorCode.BAD_REQUEST, "nested deeper than 64 levels"),
        ('{"op": "list", "limit": Infinity}', ErrorCode.BAD_JSON, "Infinity is not JSON"),
        (b"{}", ErrorCode.BAD_JSON, "binary"),
        ('"list"', ErrorCode.BAD_REQUEST, "a request is a JSON object"),
        ('{"id": true, "op": "list"}', ErrorCode.BAD_REQUEST, "id: expected"),
        ('{"op": "fly"}', ErrorCode.UNKNOWN_OP, "unknown op 'fly'"),
        ('{"op": "get"}', ErrorCode.BAD_REQUEST, "get.task_id: required field missing"),
        ('{"op": "get", "task_id": 1}', ErrorCode.BAD_REQUEST, "get.task_id: expected a string"),
        ('{"op": "list", "limit": true}', ErrorCode.BAD_REQUEST, "list.limit: expected an int"),
        ('{"op": "list", "limit": 0}', ErrorCode.BAD_REQUEST, "list.limit: expected 1 to"),
        ('{"op": "list", "states": "x"}', ErrorCode.BAD_REQUEST, "list.states: expected a list"),
        ('{"op": "list", "states": ["x"]}', ErrorCode.BAD_REQUEST, "expected one of pending"),
        ('{"op": "signal", "task_id": "a", "signal": "go"}', ErrorCode.BAD_REQUEST, "stop"),
        ('{"op": "submit", "name": "n"}', ErrorCode.BAD_REQUEST, "submit.input: required"),
        ('{"op": "submit", "name": "n", "input": 1, "metadata": []}', ErrorCode.BAD_REQUEST, ""),
        ('{"op": "get", "task_id": "a", "x": 1}', ErrorCode.BAD_REQUEST, "extra fields"),
        ('{"op": "subscribe", "task_id": "a", "after": {}}', ErrorCode.BAD_REQUEST, "a seq"),
        ('{"op": "subscribe", "after": 2}', ErrorCode.BAD_REQUEST, "after: expected an object"),
        ('{"op": "subscribe", "after": {"a": -1}}', ErrorCode.BAD_REQUEST, ">= 0"),
        ('{"op": "usage", "thread_id": "t", "include_active": 1}', ErrorCode.BAD_REQUEST, ""),
    ],
)
def test_a_bad_frame_raises_a_protocol_error_with_a_stable_code(
    frame: str | bytes, code: ErrorCode, message: str
) -> None:
    with pytest.raises(ProtocolError) as error:
        parse_frame(frame)
    assert error.value.code is code
    assert message in error.value.message


def test_frames_nested_too_deep_or_too_large_are_refused() -> None:
    deep = {"op": "submit", "name": "n", "input": json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)}
    with pytest.raises(ProtocolError) as error:
        parse_frame(json.dumps(deep))
    assert error.value.code is ErrorCode.BAD_REQUEST
    shallow = json.dumps({**deep, "input": json.loads("[" * 60 + "]" * 60)})
    assert parse_frame(shallow)
    with pytest.raises(ProtocolError) as error:
        parse_frame('{"op": "list", "thread_id": "ééé"}', max_frame=34)
    assert error.value.code is ErrorCode.TOO_LARGE  # 32 characters, 35 bytes


# -- errors of the runtime ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (actors.TaskNotFound("a"), ErrorCode.NOT_FOUND),
        (actors.UnknownTaskName("n"), ErrorCode.UNKNOWN_NAME),
        (actors.TaskExists("a"), ErrorCode.CONFLICT),
        (actors.NotCancelable("cancel", "completed"), ErrorCode.NOT_CANCELABLE),
        (actors.RequestRejected("request", "running"), ErrorCode.REJECTED),
        (actors.InvalidTransition("resume", "running"), ErrorCode.INVALID_TRANSITION),
        (actors.RuntimeClosedError("closing"), ErrorCode.UNAVAILABLE),
        (actors.TaskOwnedElsewhere("a", "node-b"), ErrorCode.UNAVAILABLE),
        (actors.ActorStoppedError("stopped"), ErrorCode.UNAVAILABLE),
        (storage.BackendUnavailableError("down"), ErrorCode.UNAVAILABLE),
        (TypeError("value of type set is not JSON-serializable"), ErrorCode.BAD_REQUEST),
        (ProtocolError(ErrorCode.TOO_MANY_SUBSCRIPTIONS, "many"), ErrorCode.TOO_MANY_SUBSCRIPTIONS),
    ],
)
def test_runtime_errors_map_to_codes(exc: BaseException, code: ErrorCode) -> None:
    assert error_code(exc) == (code, str(exc))


def test_an_unexpected_error_is_internal_and_its_text_is_not_shown() -> None:
    code, message = error_code(KeyError("secret detail"))
    assert code is ErrorCode.INTERNAL and "secret" not in message
    code, message = error_code(storage.CorruptStoreError("secret detail"))
    assert code is ErrorCode.INTERNAL and "secret" not in message
    assert all(isinstance(code, ErrorCode) for _, code in ERROR_CODES)


# -- frames out ---------------------------------------------------------------------------
def test_replies_and_events_are_json_in_the_documented_shapes() -> None:
    event = actors.TaskEvent("t", 3, "tick", 1.5, {"i": [1, 2]})
    encoded = encode_event(event)
    assert json.loads(encoded) == {
        "task_id": "t",
        "seq": 3,
        "kind": "tick",
        "at": 1.5,
        "data": {"i": [1, 2]},
    }
    assert json.loads(events_frame("s1", [encoded], 1)) == {
        "op": "event",
        "sub": "s1",
        "event": json.loads(encoded),
    }
    assert json.loads(events_frame("s1", [encoded, encoded], 2)) == {
        "op": "events",
        "sub": "s1",
        "events": [json.loads(encoded)] * 2,
    }
    assert json.loads(end_frame("s1")) == {"op": "end", "sub": "s1"}
    assert json.loads(lagged_frame("s1", 7)) == {"op": "lagged", "sub": "s1", "resume_after": 7}
    assert json.loads(lagged_frame("s2", {"t": 2})) == {
        "op": "lagged",
        "sub": "s2",
        "resume_after": {"t": 2},
    }
    assert json.loads(reply_frame(4, {"state": TaskState.RUNNING})) == {
        "id": 4,
        "ok": True,
        "result": {"state": "running"},
    }
    assert json.loads(error_frame(None, ErrorCode.NOT_FOUND, "no")) == {
        "id": None,
        "ok": False,
        "error": {"code": "not_found", "message": "no"},
    }


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"i": [1, 2], "nested": {"x": None, "y": True}},
        'caf\u00e9 \u2603 "quoted" \\ /',
        [1.0, 1e-07, 1e22, -0.0, 12345678901234567890],
        {"\u00fc": "\ud83d\ude00"},
    ],
)
@pytest.mark.parametrize("at", [1.5, 1718000000.123456, 0.1 + 0.2, 3])
def test_a_stored_event_encodes_as_its_decoded_event_does(data: Any, at: float) -> None:
    stored = storage.StoredEvent("t\u00e9-1", 7, "k\u00efnd", at, storage.encode(data))
    assert encode_stored(stored) == encode_event(actors.TaskEvent.from_stored(stored))


def test_an_event_with_no_json_form_for_its_stamp_is_refused() -> None:
    with pytest.raises(ValueError, match="no JSON form"):
        encode_stored(storage.StoredEvent("t", 1, "tick", float("nan"), "1"))


def test_the_encoder_encodes_a_batch_once_in_parts_within_its_size() -> None:
    events = [storage.StoredEvent("t", seq, "tick", 1.0, '"' + "x" * 40 + '"') for seq in (1, 2, 3)]
    one = len(encode_stored(events[0]))
    encoder = EventEncoder(max_size=2 * one + 1)
    batch = EventBatch.from_stored("t", events)
    parts = encoder.encode(batch)
    assert encoder.encode(batch) is parts  # shared by every subscriber of the batch
    assert [(part.event_count, part.last_seq) for part in parts] == [(2, 2), (1, 3)]
    assert all(len(part.text) <= encoder.max_size for part in parts)
    frame = json.loads(events_frame("s", [part.text for part in parts], 3))
    assert [event["seq"] for event in frame["events"]] == [1, 2, 3]
    tiny = EventEncoder(max_size=1).encode(batch)  # an event too big goes alone
    assert [part.event_count for part in tiny] == [1, 1, 1]


# -- the outbox ---------------------------------------------------------------------------
def joined(sub: str, parts: list[str], count: int) -> str:
    assert count == sum(part.count(",") + 1 for part in parts)
    return f"{sub}:{','.join(parts)}"


async def test_events_waiting_together_leave_as_one_frame_in_order() -> None:
    outbox = Outbox(joined, max_pending=10)
    outbox.put_control("reply-1")
    for event in "abc":
        assert outbox.offer_event("s1", event)
    outbox.offer_event("s2", "x")
    outbox.offer_event("s1", "d")
    assert [await outbox.get() for _ in range(3)] == ["reply-1", "s1:a,b,c,d", "s2:x"]
    outbox.offer_event("s1", "e")  # the earlier batch left: a new one
    assert await outbox.get() == "s1:e"


async def test_a_control_frame_of_a_subscription_closes_its_batch() -> None:
    outbox = Outbox(joined, max_pending=10)
    outbox.offer_event("s1", "a")
    outbox.put_control("end-s1", "s1")
    outbox.offer_event("s1", "b")
    assert [await outbox.get() for _ in range(3)] == ["s1:a", "end-s1", "s1:b"]


async def test_batches_are_bounded_by_count_and_size() -> None:
    outbox = Outbox(joined, max_pending=100, max_batch=3, max_batch_size=8)
    for event in ["a", "b", "c", "d", "eeeeeeeee", "f", "gggg", "h", "i"]:
        outbox.offer_event("s", event)
    assert [await outbox.get() for _ in range(5)] == [
        "s:a,b,c",  # three events at most
        "s:d",
        "s:eeeeeeeee",  # longer than max_batch_size alone
        "s:f,gggg,h",  # 8 characters with the commas
        "s:i",
    ]


async def test_events_offered_together_count_as_many() -> None:
    outbox = Outbox(joined, max_pending=5, max_batch=3)
    assert outbox.offer_event("s", "a,b", 2)
    assert outbox.offer_event("s", "c,d", 2)  # joins: the batch held fewer than 3
    assert outbox.offer_event("s", "e")  # the batch holds 4: a new one
    assert outbox.statistics().pending_events == 5
    assert not outbox.offer_event("s", "f")
    assert [await outbox.get() for _ in range(2)] == ["s:a,b,c,d", "s:e"]
    assert outbox.offer_event("s", "f,g,h,i,j,k", 6)  # more than max_pending: alone
    assert not outbox.offer_event("s", "l")
    assert await outbox.get() == "s:f,g,h,i,j,k"


async def test_events_beyond_max_pending_are_refused_until_the_writer_drains() -> None:
    outbox = Outbox(joined, max_pending=2)
    assert outbox.offer_event("s", "a") and outbox.offer_event("s", "b")
    assert not outbox.offer_event("s", "c")
    assert outbox.statistics().pending_events == 2
    room = trio.Event()

    async def wait_for_room() -> None:
        await outbox.wait_room()
        room.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_room)
        await trio.testing.wait_all_tasks_blocked()
        assert not room.is_set()
        assert await outbox.get() == "s:a,b"
        await room.wait()
    assert outbox.offer_event("s", "c")


async def test_discard_drops_a_subscriptions_queued_events() -> None:
    outbox = Outbox(joined, max_pending=10)
    outbox.offer_event("s1", "a")
    outbox.put_control("reply")
    outbox.offer_event("s2", "b")
    outbox.offer_event("s1", "c")
    outbox.discard("s1")
    assert outbox.statistics().pending_events == 1
    assert [await outbox.get() for _ in range(2)] == ["reply", "s2:b"]


async def test_the_reader_waits_while_too_many_replies_wait() -> None:
    outbox = Outbox(joined, max_pending=10, max_control=2)
    outbox.put_control("r1")
    outbox.put_control("r2")
    with trio.move_on_after(0) as scope:  # would block: a cancelled wait returns nothing
        await outbox.wait_control_room()
    assert scope.cancelled_caught
    assert await outbox.get() == "r1"
    await outbox.wait_control_room()


async def test_close_drops_everything_and_wakes_the_writer() -> None:
    outbox = Outbox(joined, max_pending=1)
    outbox.offer_event("s", "a")
    outbox.close()
    assert outbox.offer_event("s", "b")  # dropped
    await outbox.wait_room()
    with pytest.raises(trio.ClosedResourceError):
        await outbox.get()


# -- text and numbers the store cannot keep (issue #17) ---------------------------------------
@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ('{"op": "get", "task_id": "\\ud800"}', "get.task_id: text that cannot be stored"),
        ('{"op": "get", "task_id": "ab\\uDFFF"}', "(lone surrogate at 2)"),
        ('{"op": "submit", "name": "n", "input": {"a": ["\\ud801"]}}', "submit.input['a'][0]:"),
        ('{"op": "submit", "name": "n", "input": 1, "metadata": {"\\udc00": 1}}', "key "),
        ('{"op": "auth", "token": "\\ud800"}', "auth.token:"),
        ('{"op": "get", "task_id": "\ud800"}', "get.task_id:"),  # (a str, not from a socket)
        (
            '{"op": "history", "task_id": "t", "after": 9223372036854775808}',
            "<= 9223372036854775807",
        ),
        ('{"op": "subscribe", "after": {"t": 9223372036854775808}}', "<= 9223372036854775807"),
    ],
)
def test_unstorable_text_and_seqs_are_bad_requests_naming_the_field(
    frame: str, message: str
) -> None:
    with pytest.raises(ProtocolError) as error:
        parse_frame(frame)
    assert error.value.code is ErrorCode.BAD_REQUEST
    assert message in error.value.message


@pytest.mark.parametrize(
    "text",
    [
        "\\ud83d\\ude00",  # a surrogate pair: an emoji
        "\\\\ud800",  # an escaped backslash, then the letters ud800
        "é😀",
    ],
)
def test_text_that_only_looks_unstorable_is_accepted(text: str) -> None:
    frame = parse_frame('{"op": "get", "task_id": "' + text + '"}')
    assert isinstance(frame.op, Get)
    frame.op.task_id.encode("utf-8")


def test_the_largest_seq_is_accepted() -> None:
    frame = parse_frame('{"op": "history", "task_id": "t", "after": 9223372036854775807}')
    assert isinstance(frame.op, History) and frame.op.after == (1 << 63) - 1
