"""Webhooks against a real HTTP receiver on 127.0.0.1 that fails, times out and recovers (H1-H5)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from backend import AppError, Forbidden
from backend.testing import ManualClock, TestBackend
from backend.values import decode_value
from tests.support.booking import UTC, World, clock_at, clocked_backend, new_world

NOW = dt.datetime(2030, 9, 2, 9, 0, tzinfo=UTC)
CLASS = NOW + dt.timedelta(days=3)


@dataclass
class Receiver:
    """A plain asyncio HTTP/1.1 server: each request takes the next behaviour from ``plan`` (then ``ok``)."""

    plan: list[str] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hooks/studio"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")[1:]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append((headers, body))
            mode = self.plan.pop(0) if self.plan else "ok"
            if mode == "slow":
                await asyncio.sleep(1.5)  # well past the client's timeout
            status = "500 Internal Server Error" if mode == "fail" else "200 OK"
            writer.write(f"HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver()
    got.server = await asyncio.start_server(got.handle, "127.0.0.1", 0)
    yield got
    got.server.close()


@pytest.fixture(scope="module")
async def wtb() -> AsyncIterator[TestBackend]:
    async with clocked_backend(NOW) as harness:
        yield harness


@pytest.fixture
def clock(wtb: TestBackend, monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    monkeypatch.setenv("BACKEND_WEBHOOK_ALLOW_PRIVATE_URLS", "1")  # the receiver is on loopback
    monkeypatch.setenv("BACKEND_WEBHOOK_TIMEOUT_SECONDS", "0.4")
    return clock_at(wtb, NOW)


@pytest.fixture
async def world(wtb: TestBackend, clock: ManualClock) -> World:
    world = await new_world(wtb)
    await world.member("ann")
    await world.grant("ann", 5, "2030-12-31")
    clock.advance(seconds=1)  # endpoints get events created after them: the grant is older
    return world


async def create(world: World, url: str, events: list[str], **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = await world.tb.mutation(
        "webhooks:create", {"businessId": world.business_id, "url": url, "events": events, **extra}, as_user=world.owner)
    return result


async def deliver(world: World) -> dict[str, int]:
    outcome = await world.tb.runner.action("webhooks:deliver", {}, None, allow_internal=True)
    assert outcome.error is None, outcome.error
    result: dict[str, int] = decode_value(outcome.value)
    return result


async def deliveries(world: World, webhook_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await world.tb.query("webhooks:deliveries", {"webhookId": webhook_id},
                                                      as_user=world.owner)
    return rows


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, headers["webhook-signature"])


async def test_fails_times_out_recovers_in_order_signed(world: World, clock: ManualClock, receiver: Receiver) -> None:
    hook = await create(world, receiver.url, ["booking_confirmed", "booking_cancelled"])
    assert hook["secret"].startswith("whsec_")
    first = await world.book("ann", await world.instance(CLASS))
    clock.advance(seconds=1)
    await world.cancel("ann", first["bookingId"])
    clock.advance(seconds=1)
    await world.book("ann", await world.instance(CLASS + dt.timedelta(days=1)))
    receiver.plan = ["fail", "slow"]
    result = await deliver(world)
    assert (result["dispatched"], result["delivered"], result["retrying"]) == (3, 0, 1)
    [*_, head] = await deliveries(world, hook["webhookId"])
    assert (head["seq"], head["status"], head["attempts"], head["lastStatusCode"]) == (1, "pending", 1, 500)
    assert head["nextAttemptAt"] == "2030-09-02T09:00:33Z"  # 30 s after the first failure
    assert (await deliver(world))["delivered"] == 0 and len(receiver.received) == 1  # not due yet: nothing sent
    clock.advance(seconds=30)
    assert (await deliver(world))["retrying"] == 1  # timed out
    [*_, head] = await deliveries(world, hook["webhookId"])
    assert (head["attempts"], head["nextAttemptAt"]) == (2, "2030-09-02T09:01:33Z")  # the wait doubled
    assert "timed out" in head["lastError"] or "timeout" in head["lastError"].lower()
    clock.advance(seconds=60)
    assert (await deliver(world))["delivered"] == 3
    bodies = [json.loads(body) for _, body in receiver.received]
    assert [(b["sequence"], b["type"]) for b in bodies] == [
        (1, "booking_confirmed"), (1, "booking_confirmed"), (1, "booking_confirmed"), (2, "booking_cancelled"),
        (3, "booking_confirmed")]
    assert len({b["id"] for b in bodies[:3]}) == 1  # a redelivery carries the same event id (dedupe)
    assert bodies[0]["data"]["bookingId"] == first["bookingId"] and bodies[0]["businessId"] == world.business_id
    for headers, body in receiver.received:
        assert headers["webhook-id"] == json.loads(body)["id"]
        assert verify(hook["secret"], headers, body)
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert [d["status"] for d in await deliveries(world, hook["webhookId"])] == ["delivered"] * 3
    assert (await deliver(world))["delivered"] == 0  # at least once, and no more once delivered


async def test_a_day_of_failures_marks_it_failed_and_replay_sends_it(
    world: World, clock: ManualClock, receiver: Receiver
) -> None:
    hook = await create(world, receiver.url, ["*"], secret="a-shared-secret-of-ours")
    await world.book("ann", await world.instance(CLASS))
    receiver.plan = ["fail"] * 1000
    start = clock.now()
    await deliver(world)
    for _ in range(100):
        [head] = await deliveries(world, hook["webhookId"])
        if head["status"] == "failed":
            break
        clock.set(dt.datetime.fromisoformat(head["nextAttemptAt"].replace("Z", "+00:00")))
        await deliver(world)
    assert head["status"] == "failed", head
    assert 20 <= head["attempts"] == len(receiver.received) <= 40
    assert clock.now() - start <= dt.timedelta(days=1)
    # A later event is not held back by the failed one.
    receiver.plan = []
    await world.book("ann", await world.instance(CLASS + dt.timedelta(days=1)))
    assert (await deliver(world))["delivered"] == 1
    assert await world.tb.mutation("webhooks:replay", {"webhookId": hook["webhookId"]}, as_user=world.owner) == 1
    assert (await deliver(world))["delivered"] == 1
    assert [d["status"] for d in await deliveries(world, hook["webhookId"])] == ["delivered", "delivered"]
    headers, body = receiver.received[-1]
    expected = hmac.new(b"a-shared-secret-of-ours", f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode()
                        + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "http://localhost:8080/x", "http://127.0.0.1/x", "http://10.1.2.3/x",
     "http://169.254.169.254/latest/meta-data", "http://[::1]/x", "https://user:pw@example.com/x", "example.com"],
)
async def test_urls_inside_the_server_network_are_refused(
    world: World, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BACKEND_WEBHOOK_ALLOW_PRIVATE_URLS")
    with pytest.raises(AppError) as error:
        await create(world, url, ["*"])
    assert (error.value.data["code"], error.value.data["field"]) == ("invalid_argument", "url")


async def test_public_urls_pass_and_the_address_is_checked_again_before_sending(
    world: World, clock: ManualClock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = await create(world, receiver.url, ["booking_confirmed"])
    await world.book("ann", await world.instance(CLASS))
    monkeypatch.delenv("BACKEND_WEBHOOK_ALLOW_PRIVATE_URLS")
    assert (await deliver(world))["retrying"] == 1
    [head] = await deliveries(world, hook["webhookId"])
    assert head["lastError"].startswith("refused:") and receiver.received == []
    clock.advance(seconds=1)
    other = await create(world, "https://hooks.example.com/in", ["booking_confirmed"])
    listed = await world.tb.query("webhooks:list", {"businessId": world.business_id}, as_user=world.owner)
    assert [w["webhookId"] for w in listed] == [hook["webhookId"], other["webhookId"]]
    assert all("secret" not in w and w["secretHint"].startswith("…") for w in listed)


async def test_staff_only_and_removed_endpoints_get_nothing(world: World, receiver: Receiver) -> None:
    with pytest.raises(Forbidden):
        await world.tb.mutation("webhooks:create", {"businessId": world.business_id, "url": receiver.url,
                                                    "events": ["*"]}, as_user=world.subject("ann"))
    hook = await create(world, receiver.url, ["*"])
    with pytest.raises(Forbidden):
        await world.tb.query("webhooks:deliveries", {"webhookId": hook["webhookId"]}, as_user=world.subject("ann"))
    with pytest.raises(AppError) as bad:
        await create(world, receiver.url, ["Booking Confirmed"])
    assert bad.value.data["field"] == "events[0]"
    await world.tb.mutation("webhooks:remove", {"webhookId": hook["webhookId"]}, as_user=world.owner)
    await world.book("ann", await world.instance(CLASS))
    assert (await deliver(world))["dispatched"] == 0 and receiver.received == []


async def test_a_run_that_dies_mid_delivery_is_sent_again_after_its_lease(
    world: World, clock: ManualClock, receiver: Receiver
) -> None:
    hook = await create(world, receiver.url, ["booking_confirmed"])
    await world.book("ann", await world.instance(CLASS))
    await world.internal("webhooks:dispatch", {})
    claimed = await world.internal("webhooks:claim", {})  # a run claims it, then dies before recording
    assert [c["url"] for c in claimed] == [receiver.url]
    assert (await deliver(world))["delivered"] == 0 and receiver.received == []  # leased: nobody else sends
    clock.advance(minutes=5)  # past the lease
    assert (await deliver(world))["delivered"] == 1
    [row] = await deliveries(world, hook["webhookId"])
    assert (row["status"], row["attempts"]) == ("delivered", 2)
    assert len(receiver.received) == 1
