"""The worker runtime shared by every role: gRPC server, lifecycle, load reporting, KV event
forwarding, the engine adapters (``vllm``, ``sim``) and the role registry (``roles``; the roles
themselves live in ``prefill/`` and ``decode/`` and are imported by name). Imports only ``protocol``
and ``transfer``; never the orchestrator."""
