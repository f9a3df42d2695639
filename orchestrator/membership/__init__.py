"""Live membership of the worker pools: the registry, restarts, scaling and draining (``controller``)."""
