"""pdserve-bench: a load generator and reporter for any OpenAI-compatible streaming endpoint.

Layers, each in its own module:

* ``spec``        frozen request specs (what to send), produced by ``workloads``
* ``workloads``   deterministic, seeded request generators (chat, shared docs, unique, mix, trace replay)
* ``load``        load shapes: arrival offsets for open-loop runs, concurrency for closed-loop runs
* ``api`` / ``sse``  the two OpenAI endpoints (chat, completions) and Server-Sent-Events parsing
* ``client``      one streamed HTTP request -> one ``RequestRecord`` (raw timeline, usage, headers)
* ``runner``      one run = one target x one load point, bounded in count and time
* ``plan``        which runs happen in which order (targets interleaved)
* ``metrics``     pure arithmetic on records: latencies, percentiles, throughput, hit rate, goodput
* ``report`` / ``output`` / ``plots``  text tables, JSON/CSV files, PNG figures
* ``cli``         ``pdserve-bench ...`` (``bench.cli.main``; also ``python -m bench ...``)
"""
