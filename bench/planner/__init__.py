"""``pdserve plan``: size the prefill:decode split of a fleet for TTFT and TPOT SLOs on the simulated engine.

For N workers the planner searches the disaggregated splits (1..N-1 prefill workers) and the colocated
fleet; for each it finds the goodput (DistServe's: the highest request rate at which at least 90% of the
requests meet both SLOs) by rate bisection, and the SLO attainment and p99 TTFT/TPOT at the rates asked
about; it recommends the split with the highest goodput, prints the ``pdserve scale`` commands that
apply it, and writes ``plan.md``, ``plan.json`` and ``plan.png``.

Design choice: the fleet runs in this process, in virtual time (``fleet``). ``bench/suites`` measure a
fleet by starting ``pdserve up`` (gRPC sim workers, the real front end) and driving it with
``pdserve-bench`` in wall-clock time, slowed 20-50x so a 2-core host keeps up: one load point of 16
workers takes minutes, a search needs hundreds of points. ``bench/routing/sim.py`` is fast but models a
prefill worker as a FIFO queue with a token rate and has no decode side. The sim engine's core
(``worker.engines.sim.SimEngineCore``) is synchronous and clock-free, so the planner steps one core per
worker from an event heap, with the orchestrator's own ``Router`` (presets, disaggregation policy,
prefix index fed by the engines' KV events) placing each request as ``orchestrator.flow`` does. A run of
a few thousand requests takes seconds of CPU.

Fidelity, in short: the batching, chunked prefill, prefix caching, eviction, preemption, step times and
KV pull times are the sim engine's own, and routing is the orchestrator's; what is left out is the
orchestrator's view of load being up to a poll interval old, the latency of HTTP, gRPC and event
delivery, handoff leases expiring, and failures. Tokens come from a word-level stand-in for SmolLM2's
tokenizer (or a real tokenizer folder). Runs are sized by virtual duration (``goodput.RunLength``):
shorter runs hide overload and overstate goodput by about the TTFT slack over the run length. Fleets
larger than ``--max-simulated-workers`` are planned on a proportionally smaller model at a proportionally
lower rate (``spec.model_size``), which assumes the router spreads load evenly; ``--prefill-counts``
checks chosen splits on the whole fleet, and ``bench.planner.check`` on the real simulated fleet.

Modules: ``tokens`` (workload -> token requests), ``spec`` (splits, routing settings), ``fleet`` (one
run), ``goodput`` (definition, bisection, run length), ``search`` (per-split search, recommendation),
``report`` (table, commands, files, figure), ``cli``, ``check``; and ``pdserve autoscale``, the opt-in loop
that applies a sizing to a running server: ``observe`` (metrics and pools), ``sla`` (profile predictions,
sizing), ``control`` (corrections, limits, hysteresis), ``autoscale`` (the loop, the HTTP edge, the CLI).
"""
