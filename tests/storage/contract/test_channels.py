"""The contract on channels: publish and subscribe.

Runs once per backend of ``conftest.BACKENDS`` (see ``__init__``).
"""

from __future__ import annotations

import trio
import trio.testing

import storage

from .conftest import StoreOpener

# -- publish / subscribe ------------------------------------------------------


async def test_every_subscriber_gets_the_messages_in_order(store: storage.Store) -> None:
    async with store.subscribe_listen("ch") as first, store.subscribe_listen("ch") as second:
        for message in ("STOP", "PAUSE", "RESUME"):
            await store.publish_event("ch", message)
        for subscription in (first, second):
            assert [await anext(subscription) for _ in range(3)] == ["STOP", "PAUSE", "RESUME"]


async def test_a_subscriber_gets_only_messages_published_after_it_subscribed(
    store: storage.Store,
) -> None:
    await store.publish_event("ch", "before")
    async with store.subscribe_listen("ch") as subscription:
        await store.publish_event("ch", "after")
        assert await anext(subscription) == "after"


async def test_a_subscriber_gets_only_its_channels_messages(store: storage.Store) -> None:
    async with store.subscribe_listen("a") as subscription:
        await store.publish_event("b", "not mine")
        await store.publish_event("a", "mine")
        assert await anext(subscription) == "mine"


async def test_publish_without_subscribers_is_fine(store: storage.Store) -> None:
    await store.publish_event("nobody-listens", "hello")


async def test_aclose_ends_the_iteration(store: storage.Store) -> None:
    subscription = store.subscribe_listen("ch")
    received: list[str] = []

    async def listen() -> None:
        async for message in subscription:
            received.append(message)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await store.publish_event("ch", "one")
            await trio.testing.wait_all_tasks_blocked()
            await subscription.aclose()
    assert received == ["one"]
    await subscription.aclose()


async def test_a_closed_subscription_gets_no_more_messages(store: storage.Store) -> None:
    closed = store.subscribe_listen("ch")
    await closed.aclose()
    async with store.subscribe_listen("ch") as open_one:
        await store.publish_event("ch", "late")
        assert await anext(open_one) == "late"
    assert [message async for message in closed] == []


async def test_subscriptions_end_when_the_store_closes(open_store: StoreOpener) -> None:
    async with open_store() as store:
        subscription = store.subscribe_listen("ch")
        await store.publish_event("ch", "last")
    with trio.fail_after(10):
        assert [message async for message in subscription] == ["last"]
