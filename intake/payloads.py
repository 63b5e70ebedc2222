"""The four payload formats the intake accepts, and how each becomes IncomingAlert rows.

Field names and shapes follow each format's published documentation:
- Alertmanager webhook_config, payload version 4 (prometheus.io/docs/alerting/latest/configuration/#webhook_config);
- Grafana alerting webhook contact point (grafana.com/docs/grafana/latest/alerting/configure-notifications/
  manage-contact-points/integrations/webhook-notifier/);
- PagerDuty Events API v2 `POST /v2/enqueue` (developer.pagerduty.com/docs/events-api-v2/trigger-events/);
- our generic format, documented here and in the OpenAPI page.
Unknown extra fields are accepted (monitors add fields over time); the ones we rely on are checked.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from records.alerts import IncomingAlert, fingerprint_of_labels
from runbooks.schema import Level

Labels = dict[str, str]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- Alertmanager ---------------------------------------------------------------------------------


class _PrometheusStyleAlert(_Open):
    """The alert fields Alertmanager and Grafana's webhook share."""

    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: str = ""


class AlertmanagerAlert(_PrometheusStyleAlert):
    fingerprint: str = Field(min_length=1, max_length=200)


class AlertmanagerWebhook(_Open):
    """Alertmanager's webhook body (version 4): a group of alerts that share `groupLabels`."""

    version: Literal["4"]
    groupKey: str = ""
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    commonAnnotations: Labels = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AlertmanagerAlert] = Field(min_length=1, max_length=1000)


def _summary(labels: Labels, annotations: Labels) -> str:
    return (annotations.get("summary") or annotations.get("description") or annotations.get("message")
            or labels.get("alertname") or "alert")[:2000]


def from_alertmanager(source: str, body: AlertmanagerWebhook) -> list[IncomingAlert]:
    return [IncomingAlert(source=source, format="alertmanager", fingerprint=f"{source}/{alert.fingerprint}",
                          status=alert.status, summary=_summary(alert.labels, alert.annotations), labels=alert.labels,
                          annotations=alert.annotations,
                          payload={**alert.model_dump(mode="json"), "groupKey": body.groupKey,
                                   "receiver": body.receiver, "externalURL": body.externalURL})
            for alert in body.alerts]


# --- Grafana --------------------------------------------------------------------------------------


class GrafanaAlert(_PrometheusStyleAlert):
    fingerprint: str | None = Field(default=None, max_length=200)
    silenceURL: str = ""
    dashboardURL: str = ""
    panelURL: str = ""
    values: dict[str, Any] | None = None
    valueString: str = ""


class GrafanaWebhook(_Open):
    """Grafana's alerting webhook: Alertmanager's shape plus `orgId`, `title`, `state`, `message`."""

    receiver: str = ""
    status: Literal["firing", "resolved"]
    orgId: int | None = None
    alerts: list[GrafanaAlert] = Field(min_length=1, max_length=1000)
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    commonAnnotations: Labels = Field(default_factory=dict)
    externalURL: str = ""
    version: str = "1"
    groupKey: str = ""
    truncatedAlerts: int = 0
    title: str = ""
    state: str = ""
    message: str = ""


def from_grafana(source: str, body: GrafanaWebhook) -> list[IncomingAlert]:
    return [IncomingAlert(source=source, format="grafana",
                          fingerprint=f"{source}/{alert.fingerprint or fingerprint_of_labels(alert.labels)}",
                          status=alert.status, summary=_summary(alert.labels, alert.annotations), labels=alert.labels,
                          annotations=alert.annotations, payload={**alert.model_dump(mode="json"), "orgId": body.orgId})
            for alert in body.alerts]


# --- PagerDuty Events API v2 ----------------------------------------------------------------------


class PagerDutyPayload(_Open):
    summary: str = Field(min_length=1, max_length=1024)
    source: str = Field(min_length=1, max_length=255)
    severity: Literal["critical", "error", "warning", "info"]
    timestamp: datetime | None = None
    component: str | None = None
    group: str | None = None
    # `class` is a Python keyword; PagerDuty's field name is kept on the wire.
    class_: str | None = Field(default=None, alias="class")
    custom_details: dict[str, Any] | str | None = None


class PagerDutyEvent(_Open):
    routing_key: str = Field(min_length=1, max_length=64)
    event_action: Literal["trigger", "acknowledge", "resolve"]
    dedup_key: str | None = Field(default=None, min_length=1, max_length=255)
    payload: PagerDutyPayload | None = None
    client: str | None = None
    client_url: str | None = None
    links: list[dict[str, Any]] = Field(default_factory=list)
    images: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _required_by_action(self) -> PagerDutyEvent:
        if self.event_action == "trigger" and self.payload is None:
            raise ValueError("payload is required when event_action is trigger")
        if self.event_action != "trigger" and not self.dedup_key:
            raise ValueError(f"dedup_key is required when event_action is {self.event_action}")
        return self


PD_STATUS = {"trigger": "firing", "acknowledge": "acknowledged", "resolve": "resolved"}


def from_pagerduty(source: str, event: PagerDutyEvent) -> tuple[str, IncomingAlert]:
    """(dedup_key, alert). A trigger without dedup_key gets a new one, as PagerDuty does."""
    dedup_key = event.dedup_key or uuid.uuid4().hex
    labels: Labels = {}
    summary = f"{event.event_action} {dedup_key}"
    if event.payload is not None:
        p = event.payload
        labels = {"severity": p.severity, "source": p.source}
        for name, value in (("component", p.component), ("group", p.group), ("class", p.class_)):
            if value:
                labels[name] = value
        if isinstance(p.custom_details, dict):
            labels.update({k: str(v) for k, v in p.custom_details.items()
                           if isinstance(v, str | int | float | bool) and k not in labels})
        summary = p.summary
    payload = event.model_dump(mode="json", by_alias=True, exclude={"routing_key"})
    return dedup_key, IncomingAlert(source=source, format="pagerduty", fingerprint=f"{source}/{dedup_key}",
                                    status=PD_STATUS[event.event_action], summary=summary, labels=labels,
                                    payload=payload)


# --- generic --------------------------------------------------------------------------------------


class GenericAlert(BaseModel):
    """Firebreak's own alert format.

    `runbook` (optional) names the runbook to start and bypasses routing; otherwise the
    routes decide from `labels`. `dedup_key` groups repeats into one incident; without
    it, the label set is the key."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["firing", "resolved", "acknowledged"] = "firing"
    summary: str = Field(min_length=1, max_length=2000)
    dedup_key: str | None = Field(default=None, min_length=1, max_length=200)
    runbook: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=100)
    level: Level | None = None
    labels: Labels = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)


def from_generic(source: str, alert: GenericAlert) -> IncomingAlert:
    key = alert.dedup_key or fingerprint_of_labels({**alert.labels, "__summary__": alert.summary})
    return IncomingAlert(source=source, format="generic", fingerprint=f"{source}/{key}", status=alert.status,
                         summary=alert.summary, labels=alert.labels, payload=alert.model_dump(mode="json"))


MODELS: dict[str, type[BaseModel]] = {"alertmanager": AlertmanagerWebhook, "grafana": GrafanaWebhook,
                                      "pagerduty": PagerDutyEvent, "generic": GenericAlert}
