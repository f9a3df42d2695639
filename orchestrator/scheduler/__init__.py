"""KV-aware scheduler core: hashing, prefix index, scoring pipeline, policies. Pure: no I/O, no asyncio.

Typical use by the request flow::

    router = Router(model=..., block_size=..., index=PrefixIndex(model, block_size),
                    prefill=build_pipeline(preset("kv_aware")), decode=build_pipeline(preset("decode")))
    req = router.make_request(token_ids, session_key=..., cache_salt=..., kv_bytes_per_token=...)
    plan = router.plan(req, prefill_states, decode_states)          # remote, or local on plan.local
    pick = router.route_prefill(req, prefill_states, now=...)       # Decision(worker_id, matched_blocks, reason)
    dec = router.route_decode(req, decode_states, source_host=..., links=measured.snapshot())  # decode pool
    measured.observe(prefill_host, decode_host, pulled_bytes, seconds)  # MeasuredLinks, per KV pull
    index.apply(worker_id, kv_event_batch)                          # from the KV event consumer
"""
