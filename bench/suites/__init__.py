"""Benchmark suite drivers (see bench/README.md)."""
