"""KV-aware scheduler core: hashing, prefix index, scoring pipeline, policies. Pure: no I/O, no asyncio."""
