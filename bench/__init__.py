"""Benchmarks: the engine's figures beside baselines measured in the same run (``python -m bench``)."""
