"""When the database is gone the API answers 503 with a code, not a bare 500."""

from __future__ import annotations

import httpx

from backend.testing import TestBackend


async def test_database_loss_is_a_coded_503() -> None:
    async with TestBackend() as tb:
        assert tb.backend is not None and tb.backend.pool is not None
        pool = tb.backend.pool
        await pool.close()
        async with httpx.AsyncClient(base_url=tb.url) as client:
            response = await client.post("/api/query", json={"path": "counters:get", "args": {"name": "x"}})
        assert response.status_code == 503
        assert response.json()["code"] == "ServiceUnavailable"
