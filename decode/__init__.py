"""The decode role: pull a prompt's KV blocks from a prefill worker (or prefill locally) and stream."""
