"""Starting worker pools: a pure plan from the config, and launchers (Ray, local processes)."""
