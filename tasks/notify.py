"""`notify`: page the people on duty in some roles, escalate until someone acknowledges.

Recipients are the contacts on duty now (notifications.roster) in the step's
`to` roles, plus, with `by_level`, the roles the incident's response level
engages (notifications/level_routing.yaml). Each gets the message in their own
locale, with a signed acknowledgement link and the Prefect run link.

Delivery: every contact is paged in its own thread, so a slow or dead channel
holds up nobody else. A channel is retried with back-off, then the contact's next
channel is tried. Each page has an idempotency key (the step's key — incident,
runbook, step, run generation — then contact, cycle, tier) and a delivered page
is never sent again — not by a task retry, a flow retry or a resumed run of the
same run. A new run of the incident pages anew (reuse="run", tasks.base).

Escalation (`escalation: <policy>`) runs here, inside the task, and not as a
paused flow: a pause would stop every other step of the runbook, and the outage
runbook must keep failing over while it pages. Between tiers the task polls the
records in short sleeps bounded by the step's timeout, and stops the moment the page
is answered (records.acknowledgements.escalation_stop): an acknowledgement given after
the page was first sent (acknowledgement is per page: one from before, e.g. of an
earlier page of the incident, does not count), a monitor's resolve received after it
("stopped: monitor resolved" on the timeline), the incident resolved or closed, or, for
an approval gate's page (`answers_gate`), the gate decided. Paged tiers are recorded
(under the step's key) with the time their paging began, so a resumed run waits out
the remainder instead of starting over. Before each later tier the task checks that
its run still holds the incident's run lock: a run that lost it pages nobody more; and
a run that is stopping (tasks.run_stop) ends the wait at once.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
from pydantic import BaseModel, ConfigDict, Field, model_validator

from firebreak.errors import ConfigInvalid, DeliveryFailed, NotFound
from firebreak.settings import get_settings
from firebreak.yaml_lines import Path_
from notifications.acknowledgement.links import default_expiry, make_ack_link
from notifications.config import ConfigErrors, NotificationsConfig, load_config
from notifications.contacts import Contact, ContactsInvalid, channel_scheme, expand_secrets
from notifications.delivery import redact, send_and_record
from notifications.escalation import EscalationInvalid, Policy, load_policies
from notifications.messages import EVENTS, render
from records import acknowledgements, deliveries, incidents
from records.models import EventPhase
from runbooks.schema import Runbook, Step
from runbooks.templating import is_template
from runbooks.validate import Report, check_role
from tasks.base import Attempt, StepContext, StepInputError, action

#: Tries per channel before falling back to the contact's next channel, and the
#: back-off between them (seconds, doubled each time, never past the step's deadline).
CHANNEL_TRIES = 2
CHANNEL_BACKOFF = 0.5
#: Per-send timeout (connect and read), also bounded by the step's remaining time.
SEND_TIMEOUT = 10.0
#: Longer than one try of a channel can take (Apprise's connect and read timeouts, each ≤ SEND_TIMEOUT, with
#: room): a try this old with no outcome was cut off (flows.reconcile records it so).
LONGEST_SEND = timedelta(seconds=3 * SEND_TIMEOUT)
#: How often escalation looks for an acknowledgement while it waits.
ACK_POLL_SECONDS = 0.2
MAX_PARALLEL_SENDS = 64


class NotifyInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: list[str] = Field(default_factory=list, description="roles to tell")
    #: People named by contact id, told with the first tier whatever their roles: an operator action
    #: addresses a person (the commander a handover names), not a role.
    contacts: list[str] = Field(default_factory=list, description="contacts (ids) to tell, besides the roles")
    by_level: bool = Field(default=False, description="also tell the roles the incident's response level engages")
    title: str = Field(min_length=1)
    message: str = Field(min_length=1)
    #: The Chinese twins, sent to contacts whose locale is zh (required by runbooks.validate in a runbook
    #: that carries Chinese twins); without them a zh contact gets the English title and message.
    title_zh: str | None = None
    message_zh: str | None = None
    event: str = Field(default="status_update", description=f"message template: one of {', '.join(EVENTS)}")
    escalation: str | None = Field(default=None, description="escalation policy (notifications/escalation.yaml)")
    details: dict[str, Any] = Field(default_factory=dict, description="structured facts for the message template "
                                                                      "(the run_failed event's checklist)")
    answers_gate: str | None = Field(default=None, description="the approval step this page asks to decide "
                                                               "(tasks.approval): its escalation stops once the "
                                                               "gate is decided")

    @model_validator(mode="after")
    def _has_audience(self) -> NotifyInput:
        if not self.to and not self.by_level and not self.contacts:
            raise ValueError("give `to` (roles), `by_level: true` or `contacts`")
        if self.event not in EVENTS:
            raise ValueError(f"event must be one of {', '.join(EVENTS)}, got {self.event!r}")
        return self


class Delivery(BaseModel):
    contact: str
    role: str
    channel: str
    status: str  # delivered | failed | reused
    attempts: int
    tier: int = 1
    cycle: int = 0
    error: str | None = None


class NotifyOutput(BaseModel):
    delivered: int
    failed: int
    deliveries: list[Delivery]
    tiers_paged: int = 1
    acknowledged_by: str | None = None
    acknowledged_via: str | None = None
    #: Why escalation stopped before its last tier (records.acknowledgements.EscalationStop.kind).
    stopped: str | None = None


class NobodyReached(DeliveryFailed, RuntimeError):
    """Nobody holds a required role, or no page to anyone in it was delivered."""


class NobodyAcknowledged(DeliveryFailed, RuntimeError):
    """Every escalation tier was paged and nobody acknowledged in time."""


def run_link(flow_run_id: str | None) -> str | None:
    """The flow run in the Prefect UI: PREFECT_UI_URL, else derived from PREFECT_API_URL (its `/api` off)."""
    base = PREFECT_UI_URL.value()
    if not base:
        api = PREFECT_API_URL.value()
        base = api.rstrip("/").removesuffix("/api") if api else None
    if not flow_run_id or not base:
        return None
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}"


def _incident_context(ctx: StepContext) -> dict:
    incident = incidents.get_incident(ctx.incident_id)
    return {"id": incident.id, "level": ctx.level, "title": incident.title, "summary": incident.summary or "",
            "drill": ctx.drill}


def _recipients(config: NotificationsConfig, roles: list[str], at: datetime) -> dict[str, tuple[Contact, list[str]]]:
    targets: dict[str, tuple[Contact, list[str]]] = {}
    unstaffed = []
    for role in roles:
        people = config.roster.contacts_for(role, at)
        if not people:
            unstaffed.append(role)
        for person in people:
            targets.setdefault(person.id, (person, []))[1].append(role)
    if unstaffed:
        raise NobodyReached(f"nobody is on duty in role(s) {unstaffed}")
    return targets


#: A cut-off try's text is sent again only while its ack link stays valid this much longer (_Pager._resend_text).
RESEND_LINK_MARGIN = timedelta(hours=1)


#: The role a contact named directly (NotifyInput.contacts) is paged in, as deliveries record it.
NAMED_CONTACT = "named contact"


def _with_named(targets: dict[str, tuple[Contact, list[str]]], config: NotificationsConfig,
                contact_ids: list[str]) -> dict[str, tuple[Contact, list[str]]]:
    for contact_id in contact_ids:
        contact = config.directory.by_id.get(contact_id)
        if contact is None:
            raise StepInputError(f"unknown contact {contact_id!r} in `contacts`")
        targets.setdefault(contact.id, (contact, []))[1].append(NAMED_CONTACT)
    return targets


class _Pager:
    """Pages one tier: renders each contact's message and delivers it, concurrently."""

    def __init__(self, inp: NotifyInput, attempt: Attempt, names: dict[str, dict[str, str]]):
        self.inp = inp
        self.attempt = attempt
        self.ctx = attempt.context
        self.incident = _incident_context(self.ctx)
        #: per locale: the runbook's and the step's title in that language
        self.names = names
        self.run_link = run_link(self.ctx.flow_run_id)

    def page(self, targets: dict[str, tuple[Contact, list[str]]], *, cycle: int, tier: int,
             escalated_after: float | None) -> list[Delivery]:
        event = "escalated" if escalated_after is not None else self.inp.event
        jobs = [(contact, ", ".join(roles)) for contact, roles in targets.values()]
        with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL_SENDS, len(jobs)))) as pool:
            return list(pool.map(lambda job: self._deliver(job[0], job[1], cycle, tier, event, escalated_after), jobs))

    def _message(self, contact: Contact, event: str, tier: int, escalated_after: float | None) -> tuple[str, str]:
        link = None
        if event != "customer_notice":
            link = make_ack_link(self.ctx.incident_id, contact.id, default_expiry())
        zh = contact.locale == "zh"
        names = self.names.get(contact.locale, self.names["en"])
        message = render(event, contact.locale, {
            "incident": self.incident, "runbook": {"id": self.ctx.runbook_id, "title": names["runbook"]},
            "title": (self.inp.title_zh if zh and self.inp.title_zh else self.inp.title),
            "message": (self.inp.message_zh if zh and self.inp.message_zh else self.inp.message),
            "step": names["step"], "tier": tier, "ack_link": link, "run_link": self.run_link,
            "escalated_after": round((escalated_after or 0) / 60, 1), "recipient": {"id": contact.id, "name": contact.name},
            "details": self.inp.details,
        })
        return message.title, message.body

    @staticmethod
    def _resend_text(page_key: str) -> tuple[str, str] | None:
        """The text of a try of this page cut off mid-send (it may have arrived), while its ack link has at least
        RESEND_LINK_MARGIN left: a resend then repeats that message word for word, and the record keeps the one
        text the contact may have received twice. Later, a fresh message with a fresh link."""
        earlier = deliveries.unfinished_text(page_key)
        if earlier is None:
            return None
        title, body, rendered_at = earlier
        link_expires = default_expiry(rendered_at)
        if link_expires - datetime.now(timezone.utc) < RESEND_LINK_MARGIN:
            return None
        return title, body

    def _deliver(self, contact: Contact, role: str, cycle: int, tier: int, event: str,
                 escalated_after: float | None) -> Delivery:
        ctx = self.ctx
        page_key = f"{ctx.idempotency_key}:{contact.id}:c{cycle}:t{tier}"
        done = deliveries.delivered_page(page_key)
        if done is not None:
            return Delivery(contact=contact.id, role=role, channel=done.channel, status="reused",
                            attempts=done.attempts, tier=tier, cycle=cycle)
        title, body = self._resend_text(page_key) or self._message(contact, event, tier, escalated_after)
        last: Delivery | None = None
        for index, url in enumerate(contact.channels):
            try:
                real_url = expand_secrets(url)
                shown = redact(real_url)
            except ContactsInvalid as exc:
                last = Delivery(contact=contact.id, role=role, channel=f"channel {index + 1} {channel_scheme(url)}",
                                status="failed", attempts=0, tier=tier, cycle=cycle, error=str(exc))
                continue
            key = f"{page_key}:ch{index}"
            for try_number in range(1, CHANNEL_TRIES + 1):
                row = deliveries.begin_attempt(
                    key=key, page_key=page_key, incident_id=ctx.incident_id, step_id=ctx.step_id, contact=contact.id,
                    role=role, channel=shown, title=title, body=body, drill=ctx.drill, cycle=cycle, tier=tier,
                    channel_index=index, event=event, locale=contact.locale)
                if row.status == "delivered":
                    return Delivery(contact=contact.id, role=role, channel=shown, status="reused",
                                    attempts=row.attempts, tier=tier, cycle=cycle)
                timeout = min(SEND_TIMEOUT, max(self.attempt.remaining(), 0.5))
                # Sent, and this try recorded as its own delivery_attempts row beside the summary row.
                result, row = send_and_record(real_url, title, body, key=key, timeout=timeout)
                last = Delivery(contact=contact.id, role=role, channel=shown, status=row.status, attempts=row.attempts,
                                tier=tier, cycle=cycle, error=row.error)
                if result.delivered:
                    return last
                if try_number < CHANNEL_TRIES:
                    back_off = CHANNEL_BACKOFF * 2 ** (try_number - 1)
                    if self.attempt.remaining() <= back_off:
                        break
                    time.sleep(back_off)
        assert last is not None
        return last


def _tiers(inp: NotifyInput, config: NotificationsConfig, ctx: StepContext) -> list[list[str]]:
    first = list(inp.to)
    if inp.by_level:
        first += [r for r in config.routing.roles_for(ctx.runbook_id, ctx.level) if r not in first]
    policy = config.policies.get(inp.escalation) if inp.escalation else None
    return [first] + ([t.roles for t in policy.tiers] if policy else [])


class _Answered:
    """Whether this page has been answered since it was first sent (escalation_stop), recorded once."""

    def __init__(self, ctx: StepContext, attempt: Attempt, inp: NotifyInput):
        self.ctx, self.attempt, self.inp = ctx, attempt, inp
        self.since: datetime | None = None

    def check(self) -> acknowledgements.EscalationStop | None:
        if self.since is None:
            return None
        return acknowledgements.escalation_stop(self.ctx.incident_id, self.since, gate_step=self.inp.answers_gate,
                                                flow_run_id=self.ctx.flow_run_id)

    def record(self, stop: acknowledgements.EscalationStop, tier: int | None, roles: list[str]) -> None:
        left = f"; tier {tier} ({', '.join(roles)}) not paged" if tier is not None else ""
        incidents.append_event(self.ctx.incident_id, phase=EventPhase.note, status="escalation-stopped",
                               actor=self.ctx.actor, summary=f"stopped: {stop.summary}{left}",
                               step_id=self.ctx.step_id, action="notify", attempt=self.attempt.number,
                               flow_run_id=self.ctx.flow_run_id,
                               data={"kind": stop.kind, "by": stop.by, "via": stop.via, "next_tier": tier})


def _record(ctx: StepContext, attempt: Attempt, results: list[Delivery]) -> None:
    for result in results:
        if result.status == "reused":
            continue
        tier = f" tier {result.tier}" if result.tier > 1 or result.cycle else ""
        incidents.append_event(ctx.incident_id, phase=EventPhase.note, status=result.status, actor=ctx.actor,
                               summary=f"notify{tier} {result.contact} ({result.role}) via {result.channel}: "
                                       f"{result.status}",
                               step_id=ctx.step_id, action="notify", attempt=attempt.number, error=result.error,
                               flow_run_id=ctx.flow_run_id,
                               data={"contact": result.contact, "channel": result.channel, "tier": result.tier,
                                     "cycle": result.cycle})


def _names(ctx: StepContext, step_title_zh: str | None = None) -> dict[str, dict[str, str]]:
    """The runbook's and the step's titles per message locale (a Chinese page names both in Chinese)."""
    # Imported here, not at the top: tasks.catalog imports every action module, this one included.
    from tasks.catalog import load_runbook

    names = {"en": {"runbook": ctx.runbook_id, "step": ctx.step_title}}
    alarm = "运行失败告警" if ctx.step_id.startswith("run_failed__") else None  # flows.run_failure's page
    names["zh"] = {"runbook": ctx.runbook_id, "step": step_title_zh or alarm or ctx.step_title}
    try:
        runbook = load_runbook(ctx.runbook_id).runbook
    except (ConfigInvalid, NotFound):  # an ad-hoc runbook file path; its id is a fine title
        return names
    names["en"]["runbook"], names["zh"]["runbook"] = runbook.title, runbook.title_in("zh")
    base = ctx.step_id.split("__", 1)[0]
    try:
        step = runbook.step(base)
    except KeyError:
        return names
    if base == ctx.step_id:
        names["zh"]["step"] = step_title_zh or step.title_in("zh")
    elif step_title_zh is None and step.title_zh:  # an escalation, or a gate's page to its approvers, of that step
        names["zh"]["step"] = f"{step.title_zh}（升级）" if "escalation" in ctx.step_id else step.title_zh
    return names


def _check_step(step: Step, at: Path_, runbook: Runbook, problem: Report) -> None:
    """Validating a runbook (issue 3): the roles a notify step names are known and declared, its
    message event and escalation policy exist, and its attempts together outlast the policy."""
    if isinstance(step.with_.get("to"), list):
        for n, role in enumerate(step.with_["to"]):
            if isinstance(role, str) and not is_template(role):
                check_role(role, runbook, at + ("with", "to", n), problem)
    event = step.with_.get("event")
    if isinstance(event, str) and not is_template(event) and event not in EVENTS:
        problem(at + ("with", "event"), f"unknown message event {event!r}; expected one of {', '.join(EVENTS)}")
    if "to" not in step.with_ and step.with_.get("by_level") is not True and not step.with_.get("contacts"):
        problem(at + ("with",), "notify needs `to` (roles), `by_level: true` or `contacts`")
    name = step.with_.get("escalation")
    if not isinstance(name, str) or is_template(name):
        return
    try:
        policies = load_policies(get_settings().escalation_file)
    except EscalationInvalid as exc:
        problem(at + ("with", "escalation"), f"escalation policies cannot be read: {exc}")
        return
    policy = policies.get(name)
    if policy is None:
        problem(at + ("with", "escalation"), f"unknown escalation policy {name!r}; defined: {', '.join(policies)}")
    elif step.timeout * (step.retries + 1) < policy.total_seconds():
        # Each retry resumes the escalation where the last attempt stopped, so the attempts together
        # must be able to outlast it.
        problem(at + ("timeout",), f"timeout {step.timeout:g}s × {step.retries + 1} attempt(s) is shorter than "
                                   f"escalation policy {name!r} ({policy.total_seconds():g}s in all); escalation "
                                   f"runs inside the step")


@action("notify", NotifyInput, describe=lambda inp: f"notify {', '.join(inp.to + inp.contacts + (['(by level)'] if inp.by_level else []))}"
                                                    f"{' with escalation ' + inp.escalation if inp.escalation else ''}: {inp.title}",
        check_step=_check_step, reuse="run")
def notify(inp: NotifyInput, attempt: Attempt) -> NotifyOutput:
    ctx = attempt.context
    try:
        config = load_config()
    except ConfigErrors as exc:  # a broken contacts/roster/policy file: retrying cannot help
        raise StepInputError(f"notifications configuration: {exc}") from exc
    policy: Policy | None = None
    if inp.escalation:
        policy = config.policies.get(inp.escalation)
        if policy is None:
            raise StepInputError(f"unknown escalation policy {inp.escalation!r}; defined: {', '.join(config.policies)}")
    tiers = _tiers(inp, config, ctx)
    timeouts = policy.timeouts() if policy else [0.0]
    cycles = policy.repeat + 1 if policy else 1
    pager = _Pager(inp, attempt, _names(ctx))
    already = {(t.cycle, t.tier): t
               for t in acknowledgements.paged_tiers(ctx.incident_id, ctx.step_id, ctx.idempotency_key)}
    results: list[Delivery] = []
    paged = 0

    answered = _Answered(ctx, attempt, inp)

    def output(stop: acknowledgements.EscalationStop | None) -> NotifyOutput:
        delivered = sum(r.status in ("delivered", "reused") for r in results)
        return NotifyOutput(delivered=delivered, failed=len(results) - delivered, deliveries=results, tiers_paged=paged,
                            acknowledged_by=stop.by if stop else None, acknowledged_via=stop.via if stop else None,
                            stopped=stop.kind if stop else None)

    for cycle in range(cycles):
        for tier, roles in enumerate(tiers, start=1):
            first_page = (cycle, tier) == (0, 1)
            if policy is not None and not first_page:
                stop = answered.check()
                if stop is not None:  # answered since the page was first sent: later tiers are never paged
                    answered.record(stop, tier, roles)
                    return output(stop)
            if not first_page:
                attempt.check_lease()  # minutes may have passed since the intent was written under it
            if policy is not None:
                # Recorded as its paging begins: the tier's clock, and for tier 1 the moment the page was
                # first sent, after which an answer counts (a retry or resume keeps the first time).
                began = acknowledgements.record_tier(incident_id=ctx.incident_id, step_id=ctx.step_id,
                                                     policy=inp.escalation, cycle=cycle, tier=tier, roles=roles,
                                                     delivered=0, failed=0, step_key=ctx.idempotency_key)
                if first_page:
                    answered.since = already.get((0, 1), began).paged_at
            escalated_after = None if first_page else timeouts[tier - 2] if tier > 1 else timeouts[-1]
            targets = _recipients(config, roles, datetime.now(timezone.utc))
            if tier == 1 and inp.contacts:
                targets = _with_named(targets, config, inp.contacts)
            tier_results = pager.page(targets, cycle=cycle, tier=tier, escalated_after=escalated_after)
            _record(ctx, attempt, tier_results)
            results.extend(tier_results)
            paged += 1
            delivered = sum(r.status in ("delivered", "reused") for r in tier_results)
            row = acknowledgements.record_tier(incident_id=ctx.incident_id, step_id=ctx.step_id,
                                               policy=inp.escalation, cycle=cycle, tier=tier, roles=roles,
                                               delivered=delivered, failed=len(tier_results) - delivered,
                                               step_key=ctx.idempotency_key)
            if policy is None:
                break
            if delivered == 0:
                incidents.append_event(ctx.incident_id, phase=EventPhase.note, status="escalating", actor=ctx.actor,
                                       summary=f"tier {tier} ({', '.join(roles)}): no page delivered; escalating now",
                                       step_id=ctx.step_id, action="notify", attempt=attempt.number,
                                       flow_run_id=ctx.flow_run_id)
                continue
            following = (cycle, tier + 1) if tier < len(tiers) else (cycle + 1, 1)
            next_roles = tiers[following[1] - 1]
            # Wait from when the tier was first paged (a resumed run keeps the original clock).
            paged_at = already.get((cycle, tier), row).paged_at
            wait_until = paged_at + timedelta(seconds=timeouts[tier - 1])
            while True:
                stop = answered.check()
                if stop is not None:
                    answered.record(stop, following[1] if following[0] < cycles else None, next_roles)
                    return output(stop)
                left = (wait_until - datetime.now(timezone.utc)).total_seconds()
                if left <= 0:
                    break
                attempt.sleep(min(ACK_POLL_SECONDS, left))  # ends at once if the run is stopping
            if following[0] < cycles and following not in already:  # a resumed attempt noted it already
                incidents.append_event(ctx.incident_id, phase=EventPhase.note, status="escalating", actor=ctx.actor,
                                       summary=f"no acknowledgement {timeouts[tier - 1]:g}s after tier {tier} "
                                               f"({', '.join(roles)}); escalating",
                                       step_id=ctx.step_id, action="notify", attempt=attempt.number,
                                       flow_run_id=ctx.flow_run_id)

    if policy is not None:
        raise NobodyAcknowledged(f"nobody acknowledged after {paged} tier(s) of policy {inp.escalation!r}: "
                                 + "; ".join(f"{r.contact} (tier {r.tier}): {r.status}" for r in results))
    reached_roles = {role for r in results if r.status in ("delivered", "reused") for role in r.role.split(", ")}
    missing = [role for role in tiers[0] if role not in reached_roles]
    reached = {r.contact for r in results if r.status in ("delivered", "reused")}
    missing += [f"contact {c}" for c in inp.contacts if c not in reached]
    if missing:
        raise NobodyReached(f"nobody in role(s) {missing} was reached: "
                            + "; ".join(f"{r.contact}: {r.error}" for r in results
                                        if r.status not in ("delivered", "reused")))
    return output(None)
