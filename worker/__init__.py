"""The worker runtime shared by both roles: gRPC server, lifecycle, load reporting, KV event
forwarding, and the engine adapters (``vllm``, ``sim``). Never imports the orchestrator."""
