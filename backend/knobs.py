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
#: Bytes of encoded arguments or results. Convex: 16 MiB.
MAX_VALUE_BYTES = _env_int("BACKEND_MAX_VALUE_BYTES", 16 * 1024 * 1024, 1024, 1 << 30)
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
#: Transitions waiting to be written to one socket before the client is cut off. Convex uses 2.
MAX_PENDING_TRANSITIONS = _env_int("BACKEND_MAX_PENDING_TRANSITIONS", 4, 1, 1000)
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
