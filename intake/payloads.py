"""The four payload formats the intake accepts, and how each becomes IncomingAlert rows.

Field names and shapes follow each format's published documentation:
- Alertmanager webhook_config, payload version 4 (prometheus.io/docs/alerting/latest/configuration/#webhook_config);
- Grafana alerting webhook contact point (grafana.com/docs/grafana/latest/alerting/configure-notifications/
  manage-contact-points/integrations/webhook-notifier/, "JSON payload", "Body" and "Alert" tables);
- PagerDuty Events API v2 `POST /v2/enqueue` (developer.pagerduty.com/docs/events-api-v2/trigger-events/,
  developer.pagerduty.com/docs/events-api-v2/overview/, and the OpenAPI file PagerDuty publishes,
  github.com/PagerDuty/api-schema reference/events-v2/openapiv3.json);
- our generic format, documented here and in the OpenAPI page.
The documented examples are posted as they are in tests/intake/test_intake_formats.py
(fixtures in tests/fixtures/intake/). Unknown extra fields are accepted (monitors add
fields over time); the documented ones are typed and checked.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from intake.sources import Limits
from intake.strict_json import MAX_PROBLEMS, path_part
from records.alert_ingest import IncomingAlert
from runbooks.schema import Level

Labels = dict[str, str]
#: Integers the formats carry, within what every store reads (JSON numbers are bounded by the
#: strict parser; this bounds numbers sent as strings, which pydantic converts).
Int64 = Annotated[int, Field(ge=-(2**63), lt=2**63)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


def fingerprint_of_labels(labels: dict[str, str]) -> str:
    """A stable fingerprint for monitors that send none: a hash of the sorted label set."""
    return hashlib.sha256(json.dumps(labels, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


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
    truncatedAlerts: Int64 = 0
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
    # Documented as always sent ("the labels fingerprint"); without it (hand-made bodies)
    # the label set stands in, as for generic alerts.
    fingerprint: str | None = Field(default=None, max_length=200)
    silenceURL: str = ""
    dashboardURL: str = ""
    panelURL: str = ""
    imageURL: str = ""
    #: Query ref id → value that triggered the state; null when the rule reported none.
    #: Finite numbers only: a "NaN" string is refused, not stored as null.
    values: dict[str, FiniteFloat] | None = None
    #: The older text form of `values` (Grafana 9–11).
    valueString: str = ""
    orgId: Int64 | None = None


class GrafanaWebhook(_Open):
    """Grafana's alerting webhook: Alertmanager's shape plus `orgId`, `state`, `title`, `message`."""

    receiver: str = ""
    status: Literal["firing", "resolved"]
    orgId: Int64 | None = None
    alerts: list[GrafanaAlert] = Field(min_length=1, max_length=1000)
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    commonAnnotations: Labels = Field(default_factory=dict)
    externalURL: str = ""
    #: The payload structure's version; Grafana sends "1" (Alertmanager's own webhook sends "4").
    version: Literal["1"]
    groupKey: str = ""
    truncatedAlerts: int = Field(default=0, ge=0, lt=2**63)
    #: The group's state: `alerting` while any alert fires, else `ok`.
    state: Literal["alerting", "ok"] | None = None
    #: Rendered from the contact point's title and message templates: free text.
    title: str = ""
    message: str = ""


def from_grafana(source: str, body: GrafanaWebhook) -> list[IncomingAlert]:
    return [IncomingAlert(source=source, format="grafana",
                          fingerprint=f"{source}/{alert.fingerprint or fingerprint_of_labels(alert.labels)}",
                          status=alert.status, summary=_summary(alert.labels, alert.annotations), labels=alert.labels,
                          annotations=alert.annotations,
                          payload={**alert.model_dump(mode="json"), "orgId": body.orgId, "groupKey": body.groupKey,
                                   "receiver": body.receiver, "externalURL": body.externalURL})
            for alert in body.alerts]


# --- PagerDuty Events API v2 ----------------------------------------------------------------------


class PagerDutyPayload(_Open):
    """PD-CEF: `summary`, `source` and `severity` are required; the rest is optional."""

    summary: str = Field(min_length=1, max_length=1024)  # "The maximum permitted length … is 1024 characters"
    source: str = Field(min_length=1)
    severity: Literal["critical", "error", "warning", "info"]
    timestamp: datetime | None = None  # ISO 8601; PagerDuty's examples write the offset as +0000
    component: str | None = None
    group: str | None = None
    # `class` is a Python keyword; PagerDuty's field name is kept on the wire.
    class_: str | None = Field(default=None, alias="class")
    # Documented as an object; a plain string is taken too (some senders put text there).
    custom_details: dict[str, Any] | str | None = None


class PagerDutyImage(_Open):
    src: str = Field(min_length=1)
    href: str | None = None
    alt: str | None = None


class PagerDutyLink(_Open):
    href: str = Field(min_length=1)
    text: str | None = None


def _required_when(value: Any, info: ValidationInfo, actions: tuple[str, ...]) -> Any:
    """A field required only for some `event_action`s, reported at that field."""
    action = info.data.get("event_action")  # absent when event_action itself was invalid
    if value is None and action in actions:
        raise PydanticCustomError("missing", "Field required when event_action is {action}", {"action": action})
    return value


class PagerDutyEvent(_Open):
    """An alert event. `trigger` needs `payload`; `acknowledge` and `resolve` need only
    `routing_key`, `event_action` and `dedup_key` (anything else they carry is kept)."""

    routing_key: str = Field(min_length=1, max_length=64)
    event_action: Literal["trigger", "acknowledge", "resolve"]
    # validate_default: the "required for this action" check must run when the field is absent.
    dedup_key: str | None = Field(default=None, min_length=1, max_length=255, validate_default=True)
    payload: PagerDutyPayload | None = Field(default=None, validate_default=True)
    client: str | None = None
    client_url: str | None = None
    links: list[PagerDutyLink] = Field(default_factory=list)
    images: list[PagerDutyImage] = Field(default_factory=list)

    @field_validator("dedup_key")
    @classmethod
    def _dedup_key_for_follow_ups(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _required_when(value, info, ("acknowledge", "resolve"))

    @field_validator("payload")
    @classmethod
    def _payload_for_trigger(cls, value: PagerDutyPayload | None, info: ValidationInfo) -> PagerDutyPayload | None:
        return _required_when(value, info, ("trigger",))


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
    fingerprint = f"{source}/{dedup_key}"
    if len(fingerprint) > 300:  # a long source name and a 255-character key: still one fingerprint per key
        fingerprint = f"{source}/sha256:{hashlib.sha256(dedup_key.encode()).hexdigest()}"
    return dedup_key, IncomingAlert(source=source, format="pagerduty", fingerprint=fingerprint,
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


# --- limits: what one alert may carry (intake.sources.Limits, per source) -------------------------------------


def limit_problems(document: BaseModel, limits: Limits) -> list[dict[str, str]]:
    """Label and annotation maps over their count, or with a key or value over its length (422)."""
    problems: list[dict[str, str]] = []

    def check(values: dict[str, Any] | None, where: str, kind: Literal["labels", "annotations"]) -> None:
        if not values:
            return
        count = limits.max_labels if kind == "labels" else limits.max_annotations
        longest = limits.max_label_value_length if kind == "labels" else limits.max_annotation_value_length
        if len(values) > count:
            problems.append({"field": where, "reason": f"has {len(values)} {kind}; the limit is {count}"})
            return
        for key, value in values.items():
            if len(key) > limits.max_key_length:
                problems.append({"field": where + path_part(key),
                                 "reason": f"key is {len(key)} characters; the limit is {limits.max_key_length}"})
            elif isinstance(value, str) and len(value) > longest:
                problems.append({"field": where + path_part(key),
                                 "reason": f"value is {len(value)} characters; the limit is {longest}"})

    if isinstance(document, AlertmanagerWebhook | GrafanaWebhook):
        check(document.groupLabels, "groupLabels", "labels")
        check(document.commonLabels, "commonLabels", "labels")
        check(document.commonAnnotations, "commonAnnotations", "annotations")
        for index, alert in enumerate(document.alerts):
            check(alert.labels, f"alerts[{index}].labels", "labels")
            check(alert.annotations, f"alerts[{index}].annotations", "annotations")
    elif isinstance(document, PagerDutyEvent) and document.payload is not None:
        payload = document.payload
        # These become the alert's labels (from_pagerduty).
        check({k: v for k, v in (("source", payload.source), ("component", payload.component),
                                 ("group", payload.group), ("class", payload.class_)) if v is not None},
              "payload", "labels")
        if isinstance(payload.custom_details, dict):
            check(payload.custom_details, "payload.custom_details", "labels")
        elif isinstance(payload.custom_details, str) and len(payload.custom_details) > limits.max_annotation_value_length:
            problems.append({"field": "payload.custom_details",
                             "reason": f"is {len(payload.custom_details)} characters; "
                                       f"the limit is {limits.max_annotation_value_length}"})
    elif isinstance(document, GenericAlert):
        check(document.labels, "labels", "labels")
        if len(document.parameters) > limits.max_labels:
            problems.append({"field": "parameters", "reason": f"has {len(document.parameters)} parameters; "
                                                              f"the limit is {limits.max_labels}"})
    return problems[:MAX_PROBLEMS]


def stored_size(alert: IncomingAlert) -> int:
    """The bytes one alert row stores: its labels, annotations and the alert as sent (as JSON)."""
    return len(json.dumps([alert.labels, alert.annotations, alert.payload], ensure_ascii=False,
                          separators=(",", ":")).encode())


def size_problems(alerts: list[IncomingAlert], where: list[str], limits: Limits) -> list[dict[str, str]]:
    """Alerts that would store more than `max_total_bytes` (413)."""
    problems = []
    for alert, field in zip(alerts, where, strict=True):
        size = stored_size(alert)
        if size > limits.max_total_bytes:
            problems.append({"field": field, "reason": f"this alert would store {size} bytes (labels, annotations "
                                                       f"and the alert); the limit is {limits.max_total_bytes}"})
    return problems[:MAX_PROBLEMS]
