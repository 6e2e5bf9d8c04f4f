"""Live queries: the invalidation index, the commit feed and the hub that re-runs affected queries."""
