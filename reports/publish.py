"""Produce an incident's reports when its run ends, and show them in Prefect.

Called from the engine (completed, failed), the flow-run hooks (crashed,
cancelled, failed outside the steps) and reconciliation (a run whose process
died). Rendering reads only the records database, so it works in any of those
places; a report that cannot be produced is noted in the timeline instead of
failing the run a second time.

Every published head is also anchored in Prefect's own database
(records.audit_anchor), so `firebreak audit verify` can compare the records with
a copy their database does not hold. That is best effort too: Prefect
unreachable is recorded, and verify then says "not anchored".
"""
from __future__ import annotations

import logging
from pathlib import Path
from uuid import UUID

from records import incidents
from records.audit_anchor import anchor
from records.models import EventPhase
from reports import i18n
from reports.render import load_record, render, write_reports

LOGGER = logging.getLogger("firebreak.reports")
ARTIFACT_LANGUAGE = "en"


def artifact_key(incident_id: str) -> str:
    return f"report-{incident_id.lower()}"


def publish_artifact(incident_id: str, flow_run_id: str | None, markdown: str | None = None) -> None:
    """The Markdown report as a Prefect artifact on the run (and on the Artifacts page)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    if markdown is None:
        markdown = render(load_record(incident_id), ARTIFACT_LANGUAGE).markdown
    with get_client(sync_client=True) as client:
        client.create_artifact(ArtifactCreate(
            key=artifact_key(incident_id), type="markdown", data=markdown,
            flow_run_id=UUID(flow_run_id) if flow_run_id else None,
            description=f"Post-incident report of {incident_id} (regenerate: firebreak report {incident_id})",
        ))


def publish_report(incident_id: str, flow_run_id: str | None = None, *, artifact: bool = True) -> dict[str, Path]:
    """Write both languages in Markdown and HTML under FIREBREAK_HOME/reports and publish the artifact.
    Never raises: the caller is ending a run and must finish recording it."""
    try:
        written = write_reports(incident_id, i18n.LANGUAGES)
    except Exception as exc:
        LOGGER.exception("report for %s could not be rendered", incident_id)
        _note(incident_id, f"Report could not be rendered: {type(exc).__name__}: {exc}")
        anchor(incident_id)  # the run's end is anchored even without its report
        return {}
    paths = {f"{lang}.{fmt}": path for (lang, fmt), path in written.items()}
    if artifact:
        try:
            publish_artifact(incident_id, flow_run_id, paths[f"{ARTIFACT_LANGUAGE}.md"].read_text(encoding="utf-8"))
        except Exception as exc:  # noqa: BLE001  best-effort artifact, Prefect unreachable: the files are written; say where it is missing
            LOGGER.warning("report artifact for %s not published: %s", incident_id, exc)
    anchor(incident_id)  # the head the report prints, or a later one; never raises
    return paths


def _note(incident_id: str, summary: str) -> None:
    try:
        incidents.append_event(incident_id, phase=EventPhase.note, status="report-failed", actor="firebreak:reports",
                               summary=summary)
    except Exception:
        LOGGER.exception("could not record the report failure of %s", incident_id)
