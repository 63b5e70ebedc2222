"""Ingesting alerts from monitors: the alert rows, the fingerprint → open incident claim (dedup),
and group commit.

Everything the intake accepts for one request is written in ONE transaction:
the alert rows, a new incident when one opens, the fingerprint claim and the
outbox row that asks for the incident's runbook run. Only after that commit
does the intake answer 202, so nothing acknowledged is lost.

Dedup is decided by the database, so it holds across several intake replicas:
`alert_fingerprints.fingerprint` is the primary key. A writer that finds the
row locks it (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE serialises
every writer); a writer that finds none inserts it inside a savepoint, and the
loser of an insert race gets an IntegrityError, re-reads the winner's row and
absorbs its alert into the winner's incident.

The other stages live beside this one: SQLite writers take turns in records.writer_turn,
replayed signatures are caught in records.signatures, the outbox is records.run_outbox,
and the incidents API reads alerts through records.alert_queries.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ForeignKey, Index, Integer, String, Table, Text, bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from records import incidents
from records.db import session_scope
from records.models import Base, EventPhase, Incident, IncidentStatus, RunState, utcnow
from records.run_outbox import RunRequest, announce_claimable, idempotency_key
from records.signatures import SignatureReplayed, replayed_signatures
from records.writer_turn import writer_turn

#: Incident statuses in which a repeated alert is absorbed instead of opening a new incident.
OPEN_STATUSES = (IncidentStatus.triggered.value, IncidentStatus.acknowledged.value, IncidentStatus.mitigated.value)


class Alert(Base):
    """One alert as a monitor sent it (one element of an Alertmanager group, one PagerDuty event…)."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_fingerprint", "fingerprint"), Index("ix_alerts_incident", "incident_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(60))
    format: Mapped[str] = mapped_column(String(20))  # alertmanager | grafana | pagerduty | generic
    fingerprint: Mapped[str] = mapped_column(String(300))  # "<source>/<monitor's fingerprint or dedup key>"
    status: Mapped[str] = mapped_column(String(20))  # firing | resolved | acknowledged
    summary: Mapped[str] = mapped_column(Text)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    annotations: Mapped[dict[str, Any]] = mapped_column(default=dict)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: opened | absorbed | resolved | acknowledged | unrouted | unmatched-resolve | not-startable
    #: | after-close (a resolve or acknowledge for an incident already resolved or closed)
    disposition: Mapped[str] = mapped_column(String(30))
    route: Mapped[str | None] = mapped_column(String(200))
    runbook_id: Mapped[str | None] = mapped_column(String(100))
    level: Mapped[str | None] = mapped_column(String(3))
    error: Mapped[str | None] = mapped_column(Text)
    incident_id: Mapped[str | None] = mapped_column(ForeignKey("incidents.id"))


class AlertFingerprint(Base):
    """Which incident a fingerprint belongs to. The primary key makes the claim unique."""

    __tablename__ = "alert_fingerprints"

    fingerprint: Mapped[str] = mapped_column(String(300), primary_key=True)
    incident_id: Mapped[str | None] = mapped_column(ForeignKey("incidents.id"))
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- the ingest interface: the alert as it is stored, the routing decision that comes with it,
# --- one request of a batch, and what each alert became ---------------------------------------


@dataclass(frozen=True)
class IncomingAlert:
    """A monitor's alert, normalised; `fingerprint` is already namespaced by source."""

    source: str
    format: str
    fingerprint: str
    status: str  # firing | resolved | acknowledged
    summary: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunPlan:
    """What to start for a new incident, decided by routing before the transaction."""

    route: str
    runbook_id: str | None  # None: the alert matched no route that starts a runbook
    runbook_version: str = ""
    level: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    flow_name: str = ""
    error: str | None = None  # the route matched but its parameters do not fit the runbook


@dataclass(frozen=True)
class AlertResult:
    alert_id: int
    fingerprint: str
    disposition: str
    incident_id: str | None


@dataclass(frozen=True)
class IngestRequest:
    """One monitor request: its alerts (each with its routing decision) and, for HMAC sources, its signature."""

    items: list[tuple[IncomingAlert, RunPlan]]
    signature: str | None = None
    source: str = ""
    #: The signature's signed timestamp and expiry (Unix seconds): see records.signatures.
    sent_at: float | None = None
    expires_at: float | None = None


def ingest(items: list[tuple[IncomingAlert, RunPlan]], *, signature: str | None = None, source: str = "",
           url: str | None = None, sent_at: float | None = None,
           expires_at: float | None = None) -> list[AlertResult]:
    """Record a request's alerts (and its signature) atomically; open incidents and outbox rows as needed.

    Raises SignatureReplayed (nothing is written) when `signature` was seen before.
    """
    (outcome,) = ingest_many([IngestRequest(items, signature, source, sent_at, expires_at)], url=url)
    if isinstance(outcome, SignatureReplayed):
        raise outcome
    return outcome


def ingest_many(requests: list[IngestRequest], *, url: str | None = None) -> list[list[AlertResult] | SignatureReplayed]:
    """Record several requests in ONE transaction (group commit), in order, as if one after another.

    A request whose signature was seen before (earlier, or earlier in this batch) gets
    SignatureReplayed and writes nothing; the others are unaffected. Any other error rolls the
    whole batch back and is raised: the caller may retry the requests one by one.
    """
    with writer_turn(url), session_scope(url) as session:
        replayed = replayed_signatures(session, requests)
        batch = _Batch(session)
        batch.look_up({alert.fingerprint for request in requests for alert, _plan in request.items})
        outcomes: list[list[_PendingResult] | SignatureReplayed] = []
        for request in requests:
            if request.signature is not None and id(request) in replayed:
                outcomes.append(SignatureReplayed(request.source))
                continue
            outcomes.append([batch.ingest_one(alert, plan) for alert, plan in request.items])
        batch.write_alert_rows()
        if any(r.disposition == "opened" for r in batch.results):
            announce_claimable(session)  # workers on PostgreSQL claim their rows as this commits, not at a poll
        return [[r.resolve() for r in outcome] if isinstance(outcome, list) else outcome for outcome in outcomes]


class _PendingResult:
    """An alert's result whose row id is known only once the batch's rows are inserted."""

    def __init__(self, fingerprint: str, disposition: str, incident_id: str | None):
        self.fingerprint, self.disposition, self.incident_id = fingerprint, disposition, incident_id
        self.alert_id: int | None = None

    def resolve(self) -> AlertResult:
        assert self.alert_id is not None
        return AlertResult(self.alert_id, self.fingerprint, self.disposition, self.incident_id)


class _Batch:
    """The alerts of one transaction. Dispositions are decided alert by alert, in order; the alert
    rows themselves are inserted together at the end (one multi-row INSERT … RETURNING id)."""

    def __init__(self, session: Session):
        self.session = session
        self.rows: list[dict[str, Any]] = []
        self.results: list[_PendingResult] = []
        #: fingerprint → its open incident (or None), as seen in this transaction; the fingerprint's
        #: row lock (PostgreSQL) is held until commit, so the answer cannot change under us.
        self.open_incident: dict[str, str | None] = {}

    def ingest_one(self, alert: IncomingAlert, plan: RunPlan) -> _PendingResult:
        incident_id = self.open_incident_of(alert.fingerprint)
        if incident_id is not None:
            return self._absorb(alert, plan, incident_id)
        if alert.status != "firing":
            closed = _claimed_incident(self.session, alert.fingerprint)
            if closed is not None:
                return self._after_close(alert, plan, closed)
            return self.record(alert, plan, "unmatched-resolve", None)
        if plan.runbook_id is None:
            return self.record(alert, plan, "unrouted", None)
        if plan.error is not None:
            return self.record(alert, plan, "not-startable", None, error=plan.error)
        incident_id, disposition = _open(self.session, alert, plan)
        self.open_incident[alert.fingerprint] = incident_id
        return self.record(alert, plan, disposition, incident_id)

    def look_up(self, fingerprints: set[str]) -> None:
        """Find (and on PostgreSQL lock, in a fixed order) the open incidents of many fingerprints at once."""
        ordered = sorted(fingerprints - self.open_incident.keys())
        for start in range(0, len(ordered), 500):
            chunk = ordered[start:start + 500]
            found = {row.fingerprint: row.incident_id if row.status in OPEN_STATUSES else None
                     for row in self.session.connection().execute(_CLAIMS_OF_MANY, {"fingerprints": chunk})}
            self.open_incident.update({fingerprint: found.get(fingerprint) for fingerprint in chunk})

    def open_incident_of(self, fingerprint: str) -> str | None:
        if fingerprint not in self.open_incident:
            self.open_incident[fingerprint] = _open_claim(self.session, fingerprint)
        return self.open_incident[fingerprint]

    def _absorb(self, alert: IncomingAlert, plan: RunPlan, incident_id: str) -> _PendingResult:
        if alert.status == "firing":
            # Repeats are kept in the alerts table (counted by the incidents API), not one timeline line each:
            # an alert storm must not bury the steps in the timeline.
            return self.record(alert, plan, "absorbed", incident_id)
        verb = "resolved" if alert.status == "resolved" else "acknowledged"
        incidents._locked(self.session, incident_id)
        incidents._append(self.session, incident_id, phase=EventPhase.note, status=f"monitor-{verb}",
                          actor=f"monitor:{alert.source}",
                          summary=f"The monitor reports the alert {verb}: {alert.summary}",
                          data={"fingerprint": alert.fingerprint, "labels": alert.labels})
        return self.record(alert, plan, verb, incident_id)

    def _after_close(self, alert: IncomingAlert, plan: RunPlan, incident_id: str) -> _PendingResult:
        """A resolve (or acknowledge) for an incident that is already resolved or closed: stored with its
        incident and shown on its timeline, so the report says what the monitor said after closure."""
        verb = "resolved" if alert.status == "resolved" else "acknowledged"
        incident = incidents._locked(self.session, incident_id)
        late = "monitor-late-resolve" if verb == "resolved" else "monitor-late-ack"  # the status column holds 20
        incidents._append(self.session, incident_id, phase=EventPhase.note, status=late,
                          actor=f"monitor:{alert.source}",
                          summary=f"The monitor reports the alert {verb} after the incident was {incident.status}: "
                                  f"{alert.summary}",
                          data={"fingerprint": alert.fingerprint, "labels": alert.labels,
                                "incident_status": incident.status})
        return self.record(alert, plan, "after-close", incident_id)

    def record(self, alert: IncomingAlert, plan: RunPlan, disposition: str, incident_id: str | None,
               error: str | None = None) -> _PendingResult:
        self.rows.append({
            "received_at": utcnow(), "source": alert.source, "format": alert.format, "fingerprint": alert.fingerprint,
            "status": alert.status, "summary": alert.summary, "labels": alert.labels,
            "annotations": alert.annotations, "payload": alert.payload, "disposition": disposition,
            "route": plan.route, "runbook_id": plan.runbook_id, "level": plan.level, "error": error,
            "incident_id": incident_id})
        result = _PendingResult(alert.fingerprint, disposition, incident_id)
        self.results.append(result)
        return result

    def write_alert_rows(self) -> None:
        if not self.rows:
            return
        connection = self.session.connection()
        if connection.dialect.name == "sqlite":
            ids = _insert_on_sqlite(connection, self.rows)
        else:
            # Core, not the ORM's bulk insert: the same statement at a fraction of the Python overhead.
            ids = list(connection.execute(_INSERT_ALERTS, self.rows).scalars().all())
        for result, alert_id in zip(self.results, ids, strict=True):
            result.alert_id = alert_id


#: Rows per multi-row INSERT on SQLite: 16 columns each stays well inside SQLite's 32,766 variables.
SQLITE_ROWS_PER_INSERT = 500


def _insert_on_sqlite(connection: Any, rows: list[dict[str, Any]]) -> list[int]:
    """Insert `rows` with one statement per 500 and derive their ids, without RETURNING.

    Why: Python's sqlite3 releases the GIL around every sqlite3_step, and RETURNING steps once per
    row. In the intake the event loop holds the GIL, so each step waits up to a switch interval to
    get it back: a 64-row batch spent most of its time waiting, and the writer bounded throughput.
    One multi-row INSERT is one step. Its ids are consecutive: the caller holds SQLite's write lock
    (BEGIN IMMEDIATE), and SQLite gives each new row one more than the largest rowid
    (https://www.sqlite.org/autoinc.html), so the last row's id (lastrowid) gives them all.

    The statement is the driver's own SQL, with each value converted by its column type's own bind
    processor (what SQLAlchemy would send): compiling a multi-row Core INSERT costs more than the
    write itself, and its compiled form is not cached."""
    columns, processors = _sqlite_alert_columns(connection.dialect)
    ids: list[int] = []
    for start in range(0, len(rows), SQLITE_ROWS_PER_INSERT):
        chunk = rows[start:start + SQLITE_ROWS_PER_INSERT]
        values = tuple(process(row[name]) if process else row[name]
                       for row in chunk for name, process in zip(columns, processors, strict=True))
        placeholders = "(" + ", ".join("?" * len(columns)) + ")"
        statement = (f"INSERT INTO {_ALERTS.name} ({', '.join(columns)}) VALUES "
                     + ", ".join([placeholders] * len(chunk)))
        last = connection.exec_driver_sql(statement, values).lastrowid
        ids.extend(range(last - len(chunk) + 1, last + 1))
    return ids


_sqlite_columns: dict[Any, tuple[list[str], list[Any]]] = {}


def _sqlite_alert_columns(dialect: Any) -> tuple[list[str], list[Any]]:
    """The alert columns a row gives (all but the id) and each one's bind processor on this dialect."""
    found = _sqlite_columns.get(dialect)
    if found is None:
        columns = [column for column in _ALERTS.columns if column.name != "id"]
        found = _sqlite_columns[dialect] = ([column.name for column in columns],
                                            [column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns])
    return found


_ALERTS = cast(Table, Alert.__table__)  # a mapped class's table (typed as the wider FromClause)
_INSERT_ALERTS = insert(_ALERTS).returning(_ALERTS.c.id, sort_by_parameter_order=True)


def _claims_query(condition: Any) -> Any:
    return (select(AlertFingerprint.fingerprint, AlertFingerprint.incident_id, Incident.status)
            .outerjoin(Incident, Incident.id == AlertFingerprint.incident_id)
            .where(condition).with_for_update(of=AlertFingerprint))


_CLAIMS_OF_MANY = (_claims_query(AlertFingerprint.fingerprint.in_(bindparam("fingerprints", expanding=True)))
                   .order_by(AlertFingerprint.fingerprint))


def _open_claim(session: Session, fingerprint: str) -> str | None:
    """The fingerprint's open incident, its claim row locked (PostgreSQL); None if it has none open."""
    row = session.execute(_claims_query(AlertFingerprint.fingerprint == fingerprint)).first()
    if row is None or row.incident_id is None:
        return None
    return row.incident_id if row.status in OPEN_STATUSES else None


def _claimed_incident(session: Session, fingerprint: str) -> str | None:
    """The incident the fingerprint last opened, whatever its status (None if it never opened one)."""
    return session.scalars(select(AlertFingerprint.incident_id)
                           .where(AlertFingerprint.fingerprint == fingerprint)).first()


def _claim(session: Session, fingerprint: str) -> AlertFingerprint | None:
    """Take the fingerprint for a new incident. None if a concurrent writer took it first
    and its incident is open (then that incident absorbs this alert)."""
    while True:
        row = session.scalars(select(AlertFingerprint).where(AlertFingerprint.fingerprint == fingerprint)
                              .with_for_update()).first()
        if row is not None:
            # A writer may have committed a new incident for it since our first look
            # (PostgreSQL READ COMMITTED): now that the row is locked, look again.
            if _open_claim(session, fingerprint) is not None:
                return None
            return row  # ours to reuse: its incident is closed (or it is unset)
        try:
            with session.begin_nested():
                row = AlertFingerprint(fingerprint=fingerprint, incident_id=None)
                session.add(row)
            return row
        except IntegrityError:
            # Another replica inserted it; its row is committed now (or we loop and lock it).
            if _open_claim(session, fingerprint) is not None:
                return None


def _open(session: Session, alert: IncomingAlert, plan: RunPlan) -> tuple[str, str]:
    """Open an incident for a firing alert: (incident id, "opened"); or, if a concurrent writer
    opened one for this fingerprint first, (that incident, "absorbed")."""
    claim = _claim(session, alert.fingerprint)
    if claim is None:
        winner = _open_claim(session, alert.fingerprint)
        assert winner is not None
        return winner, "absorbed"
    now = utcnow()
    number = incidents._next_number(session, f"incident-{now.year}")
    incident_id = f"INC-{now.year}-{number:04d}"
    assert plan.level is not None
    session.add(Incident(
        id=incident_id, runbook_id=plan.runbook_id, runbook_version=plan.runbook_version, title=alert.summary[:300],
        level=plan.level, status=IncidentStatus.triggered.value, run_state=RunState.pending.value, source="alert",
        drill=False, summary=alert.summary, parameters=plan.parameters, created_at=now, triggered_at=now,
    ))
    session.flush()
    incidents._append(session, incident_id, phase=EventPhase.note, status="triggered", actor=f"monitor:{alert.source}",
                      summary=f"Incident opened from alert {alert.fingerprint}: {alert.summary} (level {plan.level}, "
                              f"route {plan.route})",
                      data={"runbook": plan.runbook_id, "version": plan.runbook_version, "level": plan.level,
                            "fingerprint": alert.fingerprint, "labels": alert.labels, "route": plan.route})
    claim.incident_id = incident_id
    claim.claimed_at = now
    flow_parameters: dict[str, Any] = {"parameters": plan.parameters, "level": plan.level, "summary": alert.summary,
                       "incident_id": incident_id, "source": "alert"}
    if plan.flow_name == "run-runbook":
        flow_parameters["runbook"] = plan.runbook_id
    session.add(RunRequest(incident_id=incident_id, flow_name=plan.flow_name, parameters=flow_parameters,
                           idempotency_key=idempotency_key(incident_id), status="pending", attempts=0,
                           next_attempt_at=now, created_at=now))
    return incident_id, "opened"
