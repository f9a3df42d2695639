"""Routing benchmarks: decision latency at fleet scale, and a multi-turn trace over simulated caches."""
