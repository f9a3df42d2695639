"""API keys, tenants and admission control for the HTTP front end.

``keys``: the keys file (one JSON object per line: tenant, sha256 of the key, admin flag, optional
limits); keys are only ever stored and compared as hashes. ``limits``: token buckets and in-flight
counts (pure, clock injected). ``gate``: the two together, as the front end's facade uses them.
"""

from orchestrator.auth.gate import Caller, Gate
from orchestrator.auth.keys import KeyFile, KeyRecord, hash_key, new_key
from orchestrator.auth.limits import Limits, Refused, Ticket, TokenBucket

__all__ = ["Caller", "Gate", "KeyFile", "KeyRecord", "Limits", "Refused", "Ticket", "TokenBucket", "hash_key",
           "new_key"]
