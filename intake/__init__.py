"""The intake HTTP service: monitors post alerts here (Alertmanager, Grafana, PagerDuty Events v2, generic JSON).

Modules: `payloads` (the four formats, normalised), `sources` (who may post, and how they authenticate),
`routing` (label matchers → runbook and level), `runs` (the outbox dispatcher that starts runbook runs),
`app` (the FastAPI application), `server` (uvicorn).
"""
