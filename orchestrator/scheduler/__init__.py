"""KV-aware scheduler core: hashing, prefix index, scoring pipeline, policies. Pure: no I/O, no asyncio.

Typical use by the request flow::

    router = Router(model=..., block_size=..., index=PrefixIndex(model, block_size),
                    prefill=build_pipeline(preset("kv_aware")), decode=build_pipeline(preset("decode")))
    req = router.make_request(token_ids, session_key=..., cache_salt=..., kv_bytes_per_token=...)
    plan = router.plan(req, prefill_states, decode_states)          # remote or local prefill
    pick = router.route_prefill(req, prefill_states, now=...)       # Decision(worker_id, matched_blocks, reason)
    dec = router.route_decode(req, decode_states, source_host=...)  # Decision for the decode pool
    index.apply(worker_id, kv_event_batch)                          # from the KV event consumer
"""

from .approx_index import ApproxPrefixIndex
from .decision import Decision, NoEligibleWorker
from .disagg_policy import DisaggDecision, DisaggPolicy
from .hashing import block_hash_list, block_hashes, make_salt
from .links import LinkTable
from .pipeline import Pipeline
from .plugin import PluginEnv
from .prefix_index import ApplyResult, IndexStats, PrefixIndex
from .profiles import PRESETS, PoolProfile, build_pipeline, preset
from .registry import FILTERS, PICKERS, REASONS, SCORERS
from .request import RouteRequest, WorkerState
from .router import PrefixMatcher, Router

__all__ = [
    "FILTERS", "PICKERS", "PRESETS", "REASONS", "SCORERS", "ApplyResult", "ApproxPrefixIndex", "Decision",
    "DisaggDecision", "DisaggPolicy", "IndexStats", "LinkTable", "NoEligibleWorker", "Pipeline",
    "PluginEnv", "PoolProfile", "PrefixIndex", "PrefixMatcher", "RouteRequest", "Router", "WorkerState",
    "block_hash_list", "block_hashes", "build_pipeline", "make_salt", "preset",
]
