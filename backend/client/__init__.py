"""A Python client for servers that speak the Convex sync protocol (this backend, or Convex itself).

``AsyncClient`` is the real client; ``Client`` runs it on a background thread for synchronous code.

>>> async with AsyncClient("http://127.0.0.1:3210") as client:
...     await client.mutation("counters:increment", {"name": "visits"})
...     async for value in client.subscribe("counters:get", {"name": "visits"}):
...         print(value)

With the generated references (``python -m backend codegen``) mypy checks arguments and results:

>>> from functions._generated.api import api
>>> await client.mutation(api.counters.increment, {"name": "visits"})
"""

from __future__ import annotations

from ._client import AsyncClient
from ._errors import ClientError
from ._optimistic import OptimisticStore, OptimisticUpdate
from ._refs import ActionRef, FunctionRef, MutationRef, NoArgs, QueryRef, action_ref, mutation_ref, query_ref
from ._subscription import Subscription
from ._sync_wrapper import Client, SyncSubscription

__all__ = [
    "ActionRef",
    "AsyncClient",
    "Client",
    "ClientError",
    "FunctionRef",
    "MutationRef",
    "NoArgs",
    "OptimisticStore",
    "OptimisticUpdate",
    "QueryRef",
    "Subscription",
    "SyncSubscription",
    "action_ref",
    "mutation_ref",
    "query_ref",
]
