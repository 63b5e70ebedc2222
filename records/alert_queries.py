"""Reading the stored alerts: counts and recent alerts for the incidents API and reports,
and what the monitor last reported, for runbook steps."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from records.alert_ingest import Alert
from records.db import read_scope


def alert_counts(incident_ids: list[str], *, url: str | None = None) -> dict[str, int]:
    if not incident_ids:
        return {}
    with read_scope(url) as session:
        rows = session.execute(select(Alert.incident_id, func.count()).where(Alert.incident_id.in_(incident_ids))
                               .group_by(Alert.incident_id))
        return {incident_id: count for incident_id, count in rows}


def alerts_of(incident_id: str, *, limit: int = 50, url: str | None = None) -> list[Alert]:
    with read_scope(url) as session:
        return list(session.scalars(select(Alert).where(Alert.incident_id == incident_id)
                                    .order_by(Alert.id.desc()).limit(limit)))


def count_alerts(fingerprint: str, *, url: str | None = None) -> int:
    with read_scope(url) as session:
        return session.scalar(select(func.count()).select_from(Alert).where(Alert.fingerprint == fingerprint)) or 0


def monitor_reported(incident_id: str, status: str, *, url: str | None = None) -> datetime | None:
    """When the monitor last reported the incident's alert `status` (resolved | acknowledged), if ever.
    Runbook steps can read this to stop early once the monitor sees recovery."""
    with read_scope(url) as session:
        return session.scalar(select(func.max(Alert.received_at))
                              .where(Alert.incident_id == incident_id, Alert.status == status))
