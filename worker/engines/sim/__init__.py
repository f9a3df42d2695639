"""The simulated engine (kind ``sim``): a timing model of a vLLM engine with a real block manager,
prefix cache, LRU eviction and KV events, cheap enough to run a fleet of them in one process.

Modules, in pipeline order: ``profile`` (the profile a spec gives; its schema and YAML files are in
``protocol.sim_profile``), ``block_manager``, ``scheduler``, ``timing``, ``engine`` (the synchronous
core), ``adapter`` (the asyncio ``EngineAdapter``, registered here by importing it).
"""

from worker.engines.sim.adapter import KvPullError, SimEngine

__all__ = ["KvPullError", "SimEngine"]
