"""The roof: the `firebreak` command line, the drill and the local Prefect server.

Nothing below the CLI imports from here; the ground (`firebreak.settings`,
`firebreak.config_files`, `firebreak.errors` …) is everything else in `firebreak/`.
"""
from firebreak.cli.main import entry, main

__all__ = ["entry", "main"]
