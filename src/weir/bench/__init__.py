"""Benchmarks (`weir bench`): each suite measures a candidate against an in-run baseline."""
