"""pdserve orchestrator: front end, scheduler, worker pools, request flow."""
