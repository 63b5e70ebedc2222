"""`notify`: tell the people in some roles, through Apprise, and record each delivery.

First version: every contact holding a role is sent the message on their first
channel, falling back to the next channel if that fails. Sends run in parallel
so a slow channel does not hold up the others. The duty roster and escalation
policies come later (issue 3).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from prefect.settings import PREFECT_UI_URL
from pydantic import BaseModel, ConfigDict, Field

from firebreak.settings import get_settings
from notifications.contacts import Contact, ContactsInvalid, expand_secrets, load_directory
from notifications.delivery import redact, send
from records import deliveries, incidents
from records.models import EventPhase
from tasks.base import Attempt, StepContext, action


class NotifyInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: list[str] = Field(min_length=1, description="roles to tell")
    title: str = Field(min_length=1)
    message: str = Field(min_length=1)


class Delivery(BaseModel):
    contact: str
    role: str
    channel: str
    status: str
    attempts: int
    error: str | None = None


class NotifyOutput(BaseModel):
    delivered: int
    failed: int
    deliveries: list[Delivery]


class NobodyReached(RuntimeError):
    pass


def run_link(flow_run_id: str | None) -> str | None:
    base = PREFECT_UI_URL.value()
    if not flow_run_id or not base:
        return None
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}"


def compose(ctx: StepContext, title: str, message: str) -> tuple[str, str]:
    drill = "[DRILL] " if ctx.drill else ""
    full_title = f"{drill}[{ctx.incident_id} · level {ctx.level}] {title}"
    lines = [message, "", f"Incident: {ctx.incident_id}  Level: {ctx.level}  Step: {ctx.step_title}"]
    link = run_link(ctx.flow_run_id)
    if link:
        lines.append(f"Run: {link}")
    if ctx.drill:
        lines.append("This is a DRILL. 这是演练。")
    return full_title, "\n".join(lines)


def _deliver(ctx: StepContext, contact: Contact, role: str, title: str, body: str) -> Delivery:
    last: Delivery | None = None
    for index, url in enumerate(contact.channels):
        key = f"{ctx.incident_id}:{ctx.step_id}:{contact.id}:{index}"
        try:
            real_url = expand_secrets(url)
            shown = redact(real_url)
        except ContactsInvalid as exc:
            last = Delivery(contact=contact.id, role=role, channel=f"channel {index + 1}", status="failed",
                            attempts=0, error=str(exc))
            continue
        row = deliveries.begin_attempt(key=key, incident_id=ctx.incident_id, step_id=ctx.step_id, contact=contact.id,
                                       role=role, channel=shown, title=title, body=body, drill=ctx.drill)
        if row.status == "delivered":
            return Delivery(contact=contact.id, role=role, channel=shown, status="delivered", attempts=row.attempts)
        result = send(real_url, title, body)
        row = deliveries.finish_attempt(key, delivered=result.delivered, error=result.error)
        last = Delivery(contact=contact.id, role=role, channel=shown, status=row.status, attempts=row.attempts,
                        error=row.error)
        if result.delivered:
            return last
    assert last is not None
    return last


@action("notify", NotifyInput, describe=lambda inp: f"notify {', '.join(inp.to)}: {inp.title}")
def notify(inp: NotifyInput, attempt: Attempt) -> NotifyOutput:
    ctx = attempt.context
    directory = load_directory(get_settings().contacts_file)
    targets: dict[str, tuple[Contact, list[str]]] = {}
    unstaffed = []
    for role in inp.to:
        people = directory.for_role(role)
        if not people:
            unstaffed.append(role)
        for person in people:
            targets.setdefault(person.id, (person, []))[1].append(role)
    if unstaffed:
        raise NobodyReached(f"no contact holds role(s) {unstaffed}")
    title, body = compose(ctx, inp.title, inp.message)
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        results = list(pool.map(lambda item: _deliver(ctx, item[0], ", ".join(item[1]), title, body),
                                targets.values()))
    for result in results:
        incidents.append_event(ctx.incident_id, phase=EventPhase.note, status=result.status, actor=ctx.actor,
                               summary=f"notify {result.contact} ({result.role}) via {result.channel}: {result.status}",
                               step_id=ctx.step_id, action="notify", attempt=attempt.number, error=result.error,
                               flow_run_id=ctx.flow_run_id, data={"contact": result.contact, "channel": result.channel})
    delivered = sum(r.status == "delivered" for r in results)
    reached_roles = {role for r in results if r.status == "delivered" for role in r.role.split(", ")}
    missing = [role for role in inp.to if role not in reached_roles]
    output = NotifyOutput(delivered=delivered, failed=len(results) - delivered, deliveries=results)
    if missing:
        raise NobodyReached(f"nobody in role(s) {missing} was reached: "
                            + "; ".join(f"{r.contact}: {r.error}" for r in results if r.status != "delivered"))
    return output
