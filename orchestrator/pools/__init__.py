"""Worker pools as the orchestrator sees them: gRPC clients, health, load, KV event feeds."""
