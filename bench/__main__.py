"""``python -m bench ARGS...``: the same as ``pdserve-bench ARGS...``."""

from bench.cli import main

raise SystemExit(main())
