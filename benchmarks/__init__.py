"""Benchmark-set generation, evaluation and performance benchmarks."""
