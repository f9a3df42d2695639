"""Each served model's service and membership over the workers a launcher started (``pdserve up`` and the
integration harness build their front end with these).

The models share one set of metric families (their series told apart by the ``model`` label) and one
launcher; each model's service and membership see only its own workers (``Deployment.owner_of``) and its
own processes, so its pools start, fail, restart and scale on their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from orchestrator.deployment import Deployment
from orchestrator.launch.launchers import Launcher
from orchestrator.launch.plan import ProcessPlan
from orchestrator.launch.process import WorkerEndpoint
from orchestrator.membership.controller import Membership
from orchestrator.metrics import MetricFamilies, Metrics
from orchestrator.service import Service

Served = list[tuple[Service, Membership]]


async def open_models(deployment: Deployment, endpoints: Sequence[WorkerEndpoint], launcher: Launcher | None, *,
                      run_id: str, plans: Sequence[ProcessPlan] = (), supervise_interval_s: float = 1.0) -> Served:
    """Connect every model's service to its workers and start its membership (it restarts workers whose
    process dies, and scales and drains on the admin's request when ``launcher`` is given). On failure
    what was opened is closed and the error raised."""
    families = MetricFamilies()
    served: Served = []
    try:
        for config in deployment:
            own = [e for e in endpoints if deployment.owner_of(e.worker_id) is config]
            own_plans = [p for p in plans if all(deployment.owner_of(w.worker_id) is config for w in p.workers)]
            service = await Service.connect(config, own, Metrics(config.model.name, families))
            membership = Membership(service, launcher, run_id=run_id, plans=own_plans, endpoints=own,
                                    interval_s=supervise_interval_s)
            served.append((service, membership))
            membership.start()
    except BaseException:
        await close_models(served)
        raise
    return served


async def close_models(served: Served) -> None:
    """Stop every model's membership and close its service (clients, monitors). Never raises."""
    for service, membership in served:
        with contextlib.suppress(Exception):
            await membership.close()
        with contextlib.suppress(Exception):
            await service.close()
