"""The sync protocol frame by frame over a real socket (websockets client, real server, real PostgreSQL)."""

from __future__ import annotations

import uuid

import websockets

from backend.testing import TestBackend
from tests.support.sync_client import RawClient, ts_of


async def test_subscribe_mutate_and_receive_update_in_order(tb: TestBackend) -> None:
    name = f"raw-{uuid.uuid4()}"
    async with websockets.connect(f"ws://127.0.0.1:{tb.port}/api/1.48.0/sync") as ws:
        client = RawClient(ws)
        await client.connect()
        await client.send({"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [
            {"type": "Add", "queryId": 0, "udfPath": "counters:get", "args": [{"name": name}]}]})
        first = await client.recv()
        assert first["type"] == "Transition"
        assert first["startVersion"] == {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="}
        assert first["endVersion"]["querySet"] == 1
        assert first["modifications"] == [
            {"type": "QueryUpdated", "queryId": 0, "value": 0.0, "logLines": [], "journal": None}]
        await client.send({"type": "Mutation", "requestId": 0, "udfPath": "counters:increment", "args": [{"name": name}]})
        response = await client.recv()
        assert response["type"] == "MutationResponse" and response["success"] is True
        assert response["result"] == 1.0
        transition = await client.recv()
        assert transition["type"] == "Transition"
        assert transition["startVersion"] == first["endVersion"]
        assert ts_of(transition["endVersion"]["ts"]) >= ts_of(response["ts"])
        assert transition["modifications"][0]["value"] == 1.0


async def test_wrong_base_version_is_fatal(tb: TestBackend) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{tb.port}/api/sync") as ws:
        client = RawClient(ws)
        await client.connect()
        await client.send({"type": "ModifyQuerySet", "baseVersion": 3, "newVersion": 4, "modifications": []})
        message = await client.recv()
        assert message["type"] == "FatalError"
        assert "BaseVersionMismatch" in message["error"]
