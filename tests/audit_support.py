"""For the audit tests: an incident with a hash-chained timeline, and raw timeline rows written
behind the records' back."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlalchemy import text

from records import incidents
from records.db import get_engine
from records.models import EventPhase


def incident_with_events(count: int = 8) -> str:
    incident = incidents.open_incident(runbook_id="system-outage", runbook_version="1.0", title="Chat down",
                                       level="II", source="drill", parameters={"service_url": "http://x"})
    for n in range(2, count + 1):
        incidents.append_event(incident.id, phase=EventPhase.note, status="info", actor="tester",
                               summary=f"event {n}", step_id="step", data={"n": n, "text": "中文 <b>", "f": 0.1})
    return incident.id


def event_row(incident_id: str, seq: int) -> dict:
    """A row as raw SQL reads it, with `at` and `data` typed the way the chain hashes them."""
    with get_engine().connect() as conn:
        row = dict(conn.execute(text("SELECT * FROM timeline_events WHERE incident_id = :i AND seq = :s"),
                                {"i": incident_id, "s": seq}).mappings().one())
    if isinstance(row["at"], str):  # SQLite keeps naive UTC text
        row["at"] = datetime.fromisoformat(row["at"]).replace(tzinfo=timezone.utc)
    if isinstance(row["data"], str):
        row["data"] = json.loads(row["data"])
    return row


def insert_sql(row: dict) -> tuple[str, dict]:
    """Raw INSERT of a forged row, bound the way each backend stores it."""
    params = dict(row)
    params["data"] = json.dumps(row["data"])
    postgres = get_engine().dialect.name == "postgresql"
    if not postgres:
        params["at"] = row["at"].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    values = ", ".join("CAST(:data AS JSON)" if k == "data" and postgres else f":{k}" for k in params)
    return f"INSERT INTO timeline_events ({', '.join(params)}) VALUES ({values})", params
