"""KV handoff between prefill and decode workers: vLLM's kv_transfer_params <-> the ``KVHandoff`` wire
record (``protocol.types``), NIXL/UCX settings, side-channel port allocation, leases and link bandwidth.
Imports nothing else from the repo but ``protocol``."""
