"""Stored mutation results are kept for the replay window, then pruned."""

from __future__ import annotations

import uuid

from backend.testing import TestBackend


async def test_old_session_requests_are_pruned_and_recent_ones_kept(tb: TestBackend) -> None:
    old, recent = str(uuid.uuid4()), str(uuid.uuid4())
    await tb.sql(
        "INSERT INTO _session_requests (session_id, request_id, result, log_lines, created_at) "
        "VALUES ($1, 0, '1', '[]', now() - interval '2 days'), ($2, 0, '1', '[]', now())",
        old, recent,
    )
    assert tb.backend is not None
    assert await tb.backend.hub.prune_session_requests() >= 1
    left = {r["session_id"] for r in await tb.sql(
        "SELECT session_id FROM _session_requests WHERE session_id = ANY($1::text[])", [old, recent])}
    assert left == {recent}
