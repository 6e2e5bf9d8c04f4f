"""Fixtures for engine tests and benchmarks (``counters:*``, ``bench:*``).

Mounted at the top level (``functions/_fixtures/counters.py`` answers for ``counters:…``) only in test and
benchmark servers, like ``testing_*`` modules; a production server never loads them.
"""
