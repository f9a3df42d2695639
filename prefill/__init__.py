"""The prefill role: run a prompt for a remote decode and hand its KV blocks over."""
