"""Engine adapters. Each module registers itself in ``worker.engine.ENGINES`` on import."""
