"""``python -m bench.planner ARGS`` = ``pdserve plan ARGS``."""

from bench.planner.cli import main

raise SystemExit(main())
