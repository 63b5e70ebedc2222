"""Chaos tests (`make chaos`, marker `chaos`; not part of `make test`): processes killed with
SIGKILL and a Prefect server stopped during real alert bursts. Each prints the figures it measures."""
