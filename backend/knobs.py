"""Every tunable of the engine in one place, each with a default, bounds and an environment override."""

from __future__ import annotations

import os


def _env_int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = int(raw)
    if not low <= value <= high:
        raise ValueError(f"{name}={value} is outside {low}..{high}")
    return value


def _env_float(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = float(raw)
    if not low <= value <= high:
        raise ValueError(f"{name}={value} is outside {low}..{high}")
    return value


#: Rows a single function may read (index entries scanned, filtered-out rows included). Convex: 32,000.
MAX_ROWS_SCANNED = _env_int("BACKEND_MAX_ROWS_SCANNED", 32_000, 1, 10_000_000)
#: Documents a single mutation may write. Convex: 16,000.
MAX_ROWS_WRITTEN = _env_int("BACKEND_MAX_ROWS_WRITTEN", 16_000, 1, 1_000_000)
#: Index ranges a single function may read. Convex: 4,096.
MAX_READ_RANGES = _env_int("BACKEND_MAX_READ_RANGES", 4_096, 1, 1_000_000)
#: Bytes of encoded arguments. Convex: 16 MiB.
MAX_VALUE_BYTES = _env_int("BACKEND_MAX_VALUE_BYTES", 16 * 1024 * 1024, 1024, 1 << 30)
#: Bytes of one function's encoded result (JSON text); a larger result fails the call with LimitExceeded.
#: Half the argument limit: a live query's result is sent again on every change, to every subscriber.
MAX_RESULT_BYTES = _env_int("BACKEND_MAX_RESULT_BYTES", 8 * 1024 * 1024, 1024, 1 << 30)
#: Bytes of one WebSocket frame or HTTP body accepted from a client.
MAX_MESSAGE_BYTES = _env_int("BACKEND_MAX_MESSAGE_BYTES", 17 * 1024 * 1024, 1024, 1 << 30)
#: Attempts of a mutation that fails with a serialization failure or deadlock before giving up.
MUTATION_MAX_ATTEMPTS = _env_int("BACKEND_MUTATION_MAX_ATTEMPTS", 30, 1, 1000)
#: First retry backoff in seconds; doubles each attempt, with full jitter.
MUTATION_RETRY_BASE_SECONDS = _env_float("BACKEND_MUTATION_RETRY_BASE_SECONDS", 0.002, 0.0, 10.0)
#: Largest retry backoff in seconds.
MUTATION_RETRY_MAX_SECONDS = _env_float("BACKEND_MUTATION_RETRY_MAX_SECONDS", 0.25, 0.0, 60.0)
#: Connections in the asyncpg pool of one node; ``serve --workers N`` gives each worker ``1/N`` (at least 2).
POOL_MAX_SIZE = _env_int("BACKEND_POOL_MAX_SIZE", 20, 2, 1000)
#: Pool connections function calls may never take: kept for health checks and the scheduler's bookkeeping.
POOL_RESERVED = _env_int("BACKEND_POOL_RESERVED", 3, 0, 999)
#: Pool connections one caller (a user, or an anonymous client's address) may hold at once: a quarter of
#: the pool, so no single caller can starve the others.
POOL_MAX_PER_CALLER = _env_int("BACKEND_POOL_MAX_PER_CALLER", max(1, POOL_MAX_SIZE // 4), 1, 1000)
#: Calls of one caller waiting for a connection beyond its share; more are refused (429, retry later).
POOL_QUEUE_PER_CALLER = _env_int("BACKEND_POOL_QUEUE_PER_CALLER", 100, 0, 100_000)
#: Seconds a call waits for a pool connection; then it fails, having done nothing (429 waiting behind the
#: caller's own calls, 503 waiting for the pool).
POOL_WAIT_SECONDS = _env_float("BACKEND_POOL_WAIT_SECONDS", 10.0, 0.01, 600.0)
#: Seconds a query may run (wall clock, its database round trips included), as Convex allows 1 s. The
#: booking platform's heaviest calls stay far below: its whole test suite passes at 0.5 s on a busy machine.
QUERY_TIMEOUT_SECONDS = _env_float("BACKEND_QUERY_TIMEOUT_SECONDS", 1.0, 0.01, 3600.0)
#: Seconds one attempt of a mutation may run inside its transaction; then it rolls back and fails. The
#: same 1 s: a mutation holds a connection and SERIALIZABLE locks the whole time.
MUTATION_TIMEOUT_SECONDS = _env_float("BACKEND_MUTATION_TIMEOUT_SECONDS", 1.0, 0.01, 3600.0)
#: Seconds an action may run. Actions hold no connection of their own; Convex allows 10 minutes.
ACTION_TIMEOUT_SECONDS = _env_float("BACKEND_ACTION_TIMEOUT_SECONDS", 120.0, 0.01, 86400.0)
#: Seconds PostgreSQL lets one statement on a pool connection run (``statement_timeout``; 0 = no limit):
#: the second line behind the function time limits, should the node's own cancel request be lost.
STATEMENT_TIMEOUT_SECONDS = _env_float("BACKEND_STATEMENT_TIMEOUT_SECONDS", 10.0, 0.0, 86400.0)
#: Transitions waiting to be written to one socket before the client is cut off. Convex uses 2.
MAX_PENDING_TRANSITIONS = _env_int("BACKEND_MAX_PENDING_TRANSITIONS", 4, 1, 1000)
#: Bytes of frames waiting to be written to one socket (behind a send the socket is not taking) before the
#: client is cut off: with the counts above, what one slow reader can make the server hold.
MAX_QUEUED_BYTES = _env_int("BACKEND_MAX_QUEUED_BYTES", 64 * 1024 * 1024, 1024, 1 << 34)
#: Seconds without a message to a client before a JSON Ping is sent.
PING_INTERVAL_SECONDS = _env_float("BACKEND_PING_INTERVAL_SECONDS", 15.0, 0.1, 60.0)
#: Queries one socket may hold.
MAX_QUERIES_PER_SESSION = _env_int("BACKEND_MAX_QUERIES_PER_SESSION", 10_000, 1, 1_000_000)
#: Requests (mutations and actions) one socket may have in flight.
MAX_INFLIGHT_REQUESTS = _env_int("BACKEND_MAX_INFLIGHT_REQUESTS", 256, 1, 100_000)
#: Scheduled jobs one mutation may create.
MAX_SCHEDULED_PER_MUTATION = _env_int("BACKEND_MAX_SCHEDULED_PER_MUTATION", 1_000, 1, 100_000)
#: Bytes of encoded arguments of one scheduled job.
MAX_SCHEDULED_ARGS_BYTES = _env_int("BACKEND_MAX_SCHEDULED_ARGS_BYTES", 8 * 1024 * 1024, 1024, 1 << 30)
#: Seconds between scheduler polls when no wake-up arrives.
SCHEDULER_POLL_SECONDS = _env_float("BACKEND_SCHEDULER_POLL_SECONDS", 1.0, 0.01, 60.0)
#: Scheduled jobs one node runs at the same time (each running mutation holds a pool connection).
SCHEDULER_MAX_CONCURRENT_JOBS = _env_int("BACKEND_SCHEDULER_MAX_CONCURRENT_JOBS", 8, 1, 1000)
#: Seconds finished scheduled jobs are kept as history before they are deleted. Convex: 7 days.
SCHEDULER_HISTORY_SECONDS = _env_float("BACKEND_SCHEDULER_HISTORY_SECONDS", 7 * 86400.0, 60.0, 86400.0 * 3650)
#: Seconds a stored mutation result is kept for exactly-once replays after a reconnect.
SESSION_REQUEST_RETENTION_SECONDS = _env_float(
    "BACKEND_SESSION_REQUEST_RETENTION_SECONDS", 86400.0, 60.0, 86400.0 * 30
)
#: Seconds a commit-log row is kept; a node further behind than this rebuilds its subscriptions.
COMMIT_LOG_RETENTION_SECONDS = _env_float("BACKEND_COMMIT_LOG_RETENTION_SECONDS", 3600.0, 10.0, 86400.0 * 30)


def _env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise ValueError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw


#: How the server prints its log: ``text`` (one readable line per record) or ``json`` (one object per line).
LOG_FORMAT = _env_choice("BACKEND_LOG_FORMAT", "text", ("text", "json"))
#: Which calls get a log line: ``failures`` (default for ``serve``), or ``all`` (always so for ``dev``).
LOG_CALLS = _env_choice("BACKEND_LOG_CALLS", "failures", ("failures", "all"))
#: Characters of one value in a call's log line (a message, one of its log lines); longer ones are cut.
CALL_LOG_MAX_VALUE_CHARS = _env_int("BACKEND_CALL_LOG_MAX_VALUE_CHARS", 1000, 80, 1_000_000)
#: A call's own log lines shown under its line in the server log (all of them still go to the caller).
CALL_LOG_MAX_LOG_LINES = _env_int("BACKEND_CALL_LOG_MAX_LOG_LINES", 32, 0, 256)
#: Characters of one traceback in the server log.
CALL_LOG_MAX_TRACEBACK_CHARS = _env_int("BACKEND_CALL_LOG_MAX_TRACEBACK_CHARS", 16_000, 500, 10_000_000)
#: Longest lifetime ``python -m backend token --ttl`` signs (seconds).
DEV_TOKEN_MAX_TTL_SECONDS = _env_float("BACKEND_DEV_TOKEN_MAX_TTL_SECONDS", 365 * 86400.0, 1.0, 86400.0 * 3650)
#: Seconds between the dev server's checks of functions/, schema.py and migrations/ for saved files.
DEV_POLL_SECONDS = _env_float("BACKEND_DEV_POLL_SECONDS", 0.1, 0.01, 10.0)
#: Seconds without further writes before the dev server reloads (one reload per burst of saves).
DEV_DEBOUNCE_SECONDS = _env_float("BACKEND_DEV_DEBOUNCE_SECONDS", 0.05, 0.0, 10.0)
#: Function calls the dashboard's live log keeps in memory per node (0 turns the call log off).
DASHBOARD_CALL_LOG_SIZE = _env_int("BACKEND_DASHBOARD_CALL_LOG_SIZE", 1_000, 0, 1_000_000)
#: Milliseconds between the dashboard's refreshes of its live views (data browser, log, sessions, jobs).
DASHBOARD_POLL_MS = _env_int("BACKEND_DASHBOARD_POLL_MS", 1_000, 100, 60_000)
#: Rows per page of the dashboard's data browser, at most.
DASHBOARD_MAX_PAGE_ROWS = _env_int("BACKEND_DASHBOARD_MAX_PAGE_ROWS", 200, 1, 8_192)
#: Seconds a dashboard login cookie stays valid.
DASHBOARD_SESSION_SECONDS = _env_int("BACKEND_DASHBOARD_SESSION_SECONDS", 12 * 3600, 60, 30 * 86400)
#: Characters a ``BACKEND_ADMIN_KEY`` needs at least; a shorter key keeps the dashboard closed (and ``serve``
#: refuses to start), since the key is all that guards it and the login form can be tried without limit.
DASHBOARD_MIN_ADMIN_KEY_CHARS = _env_int("BACKEND_DASHBOARD_MIN_ADMIN_KEY_CHARS", 16, 1, 4096)
#: Characters of an HTTP ``Idempotency-Key`` header (visible ASCII only).
MAX_IDEMPOTENCY_KEY_LENGTH = _env_int("BACKEND_MAX_IDEMPOTENCY_KEY_LENGTH", 255, 16, 4096)
#: Bytes (UTF-8) of the strings in one index entry of a document; PostgreSQL's b-tree cannot hold ~2.7 KB.
MAX_INDEXED_STRING_BYTES = _env_int("BACKEND_MAX_INDEXED_STRING_BYTES", 2_048, 64, 2_600)
#: Documents one ``paginate`` call may ask for (``paginationOpts.numItems``). Convex: 8,192.
MAX_PAGE_ITEMS = _env_int("BACKEND_MAX_PAGE_ITEMS", 8_192, 1, 1_000_000)
#: Levels of nested arrays and objects in one value a client sends (query, mutation and action arguments).
#: Deeper values are refused naming this limit; it keeps recursive decoding and validation far from
#: Python's recursion limit. Convex: 64.
MAX_VALUE_DEPTH = _env_int("BACKEND_MAX_VALUE_DEPTH", 64, 4, 512)
#: Query subscriptions (adds and identity re-subscriptions) the hub applies in one pass. A larger query-set
#: change is applied over several passes, each followed by other sockets' work, so one client adding
#: thousands of queries cannot freeze everyone else's updates; its own Transition waits until all are in.
HUB_QUERIES_PER_PASS = _env_int("BACKEND_HUB_QUERIES_PER_PASS", 64, 1, 1_000_000)
#: Bytes of one Transition frame. A larger Transition goes out as TransitionChunk frames of at most this
#: size, which clients join before applying; a single query result larger than this fails with QueryFailed.
MAX_TRANSITION_BYTES = _env_int("BACKEND_MAX_TRANSITION_BYTES", 8 * 1024 * 1024, 64 * 1024, 1 << 30)
#: Characters of one log record (message plus traceback); longer records are cut, keeping both ends.
LOG_MAX_CHARS = _env_int("BACKEND_LOG_MAX_CHARS", 8192, 256, 1 << 20)
#: Records from one place (logger, exception type, source line) per window before the rest are suppressed
#: and counted; the count is reported with the next record from that place.
LOG_REPEAT_LIMIT = _env_int("BACKEND_LOG_REPEAT_LIMIT", 10, 1, 1_000_000)
#: Seconds of the window ``LOG_REPEAT_LIMIT`` counts in.
LOG_REPEAT_WINDOW_SECONDS = _env_float("BACKEND_LOG_REPEAT_WINDOW_SECONDS", 60.0, 0.1, 86400.0)
#: Bytes of client frames this process holds at once, across all sockets: frames being received and
#: mutations and actions decoded but not yet finished. A socket that would pass it is closed with a
#: TooManyConcurrentRequests reason (clients back off and retry), so large or stalled frames cannot exhaust
#: memory.
MAX_INBOUND_BYTES = _env_int("BACKEND_MAX_INBOUND_BYTES", 128 * 1024 * 1024, 1024 * 1024, 1 << 40)
#: Seconds a frame (or fragmented message) may take to arrive from its first byte; a client that stalls
#: mid-frame is closed after this.
FRAME_READ_TIMEOUT_SECONDS = _env_float("BACKEND_FRAME_READ_TIMEOUT_SECONDS", 30.0, 0.1, 3600.0)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: Processes ``python -m backend serve`` runs on one port (SO_REUSEPORT), each a full node. Default: the cores.
SERVE_WORKERS = _env_int("BACKEND_WORKERS", _cores(), 1, 256)
#: Connections a listening socket queues before the server accepts them (per worker).
LISTEN_BACKLOG = _env_int("BACKEND_LISTEN_BACKLOG", 2048, 16, 65_535)
#: Worker restarts allowed in ``WORKER_RESTART_WINDOW_SECONDS``; one more stops the server (a crash loop).
WORKER_MAX_RESTARTS = _env_int("BACKEND_WORKER_MAX_RESTARTS", 10, 0, 10_000)
#: The window the worker restart limit counts over, in seconds.
WORKER_RESTART_WINDOW_SECONDS = _env_float("BACKEND_WORKER_RESTART_WINDOW_SECONDS", 60.0, 1.0, 86400.0)
#: Seconds the supervisor waits before restarting a worker that died.
WORKER_RESTART_DELAY_SECONDS = _env_float("BACKEND_WORKER_RESTART_DELAY_SECONDS", 0.5, 0.0, 60.0)
#: Seconds workers get to stop after SIGTERM before the supervisor kills them.
WORKER_STOP_TIMEOUT_SECONDS = _env_float("BACKEND_WORKER_STOP_TIMEOUT_SECONDS", 30.0, 0.1, 3600.0)
