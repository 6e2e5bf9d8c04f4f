"""The OpenAPI document lists every public function (and no internal one) with its argument schema."""

from __future__ import annotations

import httpx

from backend.testing import TestBackend


async def test_openapi_lists_public_functions_only(tb: TestBackend) -> None:
    async with httpx.AsyncClient(base_url=tb.url) as client:
        document = (await client.get("/api/openapi.json")).json()
    assert tb.backend is not None
    public = {s.path for s in tb.backend.registry if not s.internal}
    internal = {s.path for s in tb.backend.registry if s.internal}
    listed = {p.removeprefix("/api/run/").rsplit("/", 1)[0] + ":" + p.rsplit("/", 1)[1] for p in document["paths"]}
    assert listed == public
    assert not listed & internal
    create = document["paths"]["/api/run/businesses/create"]["post"]
    args = create["requestBody"]["content"]["application/json"]["schema"]["properties"]["args"]
    assert args["$ref"].startswith("#/components/schemas/")
    schema = document["components"]["schemas"][args["$ref"].rsplit("/", 1)[1]]
    assert {"name", "timezone"} <= set(schema["required"])
