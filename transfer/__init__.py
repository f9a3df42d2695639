"""KV handoff between prefill and decode workers: the typed handoff record, NIXL/UCX settings,
side-channel port allocation, leases and link bandwidth. Imports nothing else from the repo."""
