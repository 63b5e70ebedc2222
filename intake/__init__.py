"""The intake HTTP service: monitors post alerts here (Alertmanager, Grafana, PagerDuty Events v2, generic JSON).

Modules: `payloads` (the four formats, normalised), `sources` (who may post, and how they authenticate),
`routing` (label matchers → runbook and level), `runs` (the run executor: claims outbox rows for its run slots
and starts their runs; embedded here, and the whole of `firebreak worker`),
`app` (the FastAPI application), `server` (uvicorn).
"""
