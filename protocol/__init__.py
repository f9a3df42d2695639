"""The wire protocol between the orchestrator and workers: ``worker.proto``, its generated code
(``make proto``), and the typed messages both sides use, converted at the gRPC edge."""
