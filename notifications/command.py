"""Who commands an incident, and who an operator is.

The commander is the contact command was last handed over to (Incident.commander), else
whoever is on duty (roster) in the commander role of the incident's level
(level_routing.yaml `commanders:`; I: the commander-in-chief, II: the scenario lead, III: the
on-site commander).

Operators are people in the contacts directory: a lifecycle action names one by contact id
(`li-wei`), by name (`李伟 Li Wei`, or the part in Latin letters, `Li Wei`) or as the forms offer
them (`李伟 Li Wei (li-wei)`). A name that is no contact is refused (UnknownOperator), so the
timeline always says who, as a person the directory knows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from firebreak.errors import InputInvalid
from notifications.config import load_config
from notifications.contacts import Contact, Directory
from records.models import Incident


class UnknownOperator(InputInvalid, ValueError):
    """An operator who is not in the contacts directory."""


@dataclass(frozen=True)
class Commander:
    contact_id: str | None
    name: str
    role: str | None
    #: True once command was handed over to this contact by hand.
    handed_over: bool

    @property
    def shown(self) -> str:
        if self.contact_id is None:
            return self.name
        how = "command handed over" if self.handed_over else f"{(self.role or '').replace('_', ' ')} on duty"
        return f"{self.name} ({self.contact_id}; {how})"


def operator_label(contact: Contact) -> str:
    """How the forms offer a contact: `李伟 Li Wei (li-wei)`."""
    return f"{contact.name} ({contact.id})"


def operator_labels(directory: Directory | None = None) -> list[str]:
    directory = directory or load_config().directory
    return [operator_label(c) for c in directory.contacts]


_LABEL = re.compile(r"^.*\(([a-z][a-z0-9-]*)\)\s*$")


def find_operator(text: str, directory: Directory | None = None) -> Contact:
    """The contact `text` names (id, name, Latin part of the name, or `name (id)`); UnknownOperator if none."""
    directory = directory or load_config().directory
    wanted = " ".join((text or "").split())
    if not wanted:
        raise UnknownOperator("an operator action needs who takes it (--by): a contact id or name")
    label = _LABEL.match(wanted)
    if label and label.group(1) in directory.by_id:
        return directory.by_id[label.group(1)]
    if wanted in directory.by_id:
        return directory.by_id[wanted]
    folded = wanted.casefold()
    for contact in directory.contacts:
        latin = " ".join(part for part in contact.name.split() if part.isascii())
        if folded in (contact.name.casefold(), latin.casefold()):
            return contact
    known = ", ".join(c.id for c in directory.contacts)
    raise UnknownOperator(f"{wanted[:80]!r} is not a contact in the contacts directory; known: {known}")


def commander_of(incident: Incident, at: datetime | None = None) -> Commander:
    config = load_config()
    if incident.commander:
        contact = config.directory.by_id.get(incident.commander)
        return Commander(incident.commander, contact.name if contact else incident.commander, None, handed_over=True)
    role = config.routing.commander_role(incident.level)
    people = config.roster.contacts_for(role, at or datetime.now(timezone.utc))
    if not people:
        return Commander(None, f"nobody on duty as {role}", role, handed_over=False)
    return Commander(people[0].id, people[0].name, role, handed_over=False)
