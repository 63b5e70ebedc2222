"""The duty roster: who holds each role at a given moment (seed 000 §4.1).

A roster file lists shifts — each gives roles, contacts and when: `always`
(the 24 h emergency group), `weekly` (days and hours, wrapping past midnight
when `to` is earlier than `from`) or `dates` (e.g. festival days 1–3), all in
the roster's timezone — and overrides (swaps) that replace one person with
another for a window.

A role named in the roster must be covered at every hour of the week by its
`always` and `weekly` shifts; a gap is a load-time error that names the role and
the hours, not a silent skip during an incident. Dated shifts add people on
top, and overrides only swap people, so neither can open a gap. A role the
roster does not name is held, at all times, by every contact holding it in the
contacts directory.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from firebreak.errors import ConfigInvalid
from notifications.contacts import Contact, Directory
from runbooks.roles import ROLES

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: list[Day] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class RosterInvalid(ConfigInvalid, ValueError):
    """The duty roster cannot be read, or names roles, contacts or hours that do not fit."""


class Weekly(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1)
    from_: time = Field(alias="from")
    to: time

    def covers(self, local: datetime) -> bool:
        clock, day = local.time(), DAYS[local.weekday()]
        if self.from_ < self.to:
            return day in self.days and self.from_ <= clock < self.to
        # Past midnight: the shift started on one of `days` and runs into the next day.
        previous = DAYS[(local.weekday() - 1) % 7]
        return (day in self.days and clock >= self.from_) or (previous in self.days and clock < self.to)


class Dates(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: date = Field(alias="from")
    to: date  # inclusive

    @model_validator(mode="after")
    def _ordered(self) -> Dates:
        if self.to < self.from_:
            raise ValueError(f"dates.to {self.to} is before dates.from {self.from_}")
        return self


class Shift(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    roles: list[str] = Field(min_length=1)
    contacts: list[str] = Field(min_length=1)
    always: bool = False
    weekly: Weekly | None = None
    dates: Dates | None = None

    @model_validator(mode="after")
    def _one_window(self) -> Shift:
        given = [n for n, v in (("always", self.always), ("weekly", self.weekly), ("dates", self.dates)) if v]
        if len(given) != 1:
            raise ValueError(f"a shift needs exactly one of always, weekly or dates (got {', '.join(given) or 'none'})")
        return self

    def covers(self, local: datetime) -> bool:
        if self.always:
            return True
        if self.weekly is not None:
            return self.weekly.covers(local)
        assert self.dates is not None
        return self.dates.from_ <= local.date() <= self.dates.to


class Override(BaseModel):
    """`replace` hands their shifts in `role` to `with` between `from` and `to` (a swap or cover)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    role: str
    replace: str
    with_: str = Field(alias="with")
    from_: datetime = Field(alias="from")
    to: datetime
    reason: str = ""


class RosterFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = "Asia/Shanghai"
    shifts: list[Shift] = Field(default_factory=list)
    overrides: list[Override] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (expected an IANA name such as Asia/Shanghai)") from None
        return value


class OnDuty(BaseModel):
    role: str
    contacts: list[str]
    shifts: list[str]  # which shifts (or "directory") put them there
    overrides: list[str] = Field(default_factory=list)


class Roster:
    def __init__(self, spec: RosterFile, directory: Directory, source: str):
        self.spec = spec
        self.directory = directory
        self.source = source
        self.zone = ZoneInfo(spec.timezone)
        self.rostered_roles = {role for shift in spec.shifts for role in shift.roles}

    def _local(self, at: datetime) -> datetime:
        if at.tzinfo is None:  # naive times are read in the roster's zone
            return at.replace(tzinfo=self.zone)
        return at.astimezone(self.zone)

    def on_duty(self, role: str, at: datetime | None = None) -> OnDuty:
        if role not in ROLES:
            raise RosterInvalid(f"unknown role {role!r}; known: {', '.join(sorted(ROLES))}")
        local = self._local(at or datetime.now(timezone.utc))
        if role not in self.rostered_roles:
            return OnDuty(role=role, contacts=[c.id for c in self.directory.for_role(role)], shifts=["directory"])
        people: list[str] = []
        shifts: list[str] = []
        for shift in self.spec.shifts:
            if role in shift.roles and shift.covers(local):
                shifts.append(shift.name)
                people.extend(c for c in shift.contacts if c not in people)
        applied: list[str] = []
        for override in self.spec.overrides:
            if override.role == role and self._local(override.from_) <= local < self._local(override.to) \
                    and override.replace in people:
                people = [override.with_ if c == override.replace else c for c in people]
                people = list(dict.fromkeys(people))
                applied.append(f"{override.replace} → {override.with_}" + (f" ({override.reason})" if override.reason else ""))
        return OnDuty(role=role, contacts=people, shifts=shifts, overrides=applied)

    def contacts_for(self, role: str, at: datetime | None = None) -> list[Contact]:
        return [self.directory.get(c) for c in self.on_duty(role, at).contacts]


def load_roster(path: Path, directory: Directory, required_roles: set[str] | None = None) -> Roster:
    """Load and check the roster; `required_roles` must each have someone on duty at every moment."""
    path = Path(path)
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise RosterInvalid(f"{path}: cannot read the duty roster: {exc}") from exc
    roster = _load_cached(str(path), mtime, directory)
    for role in sorted(required_roles or set()):
        if role not in roster.rostered_roles and not directory.for_role(role):
            raise RosterInvalid(f"{path}: role {role!r} is used but nobody holds it: no shift in the roster "
                                f"and no contact with that role in the contacts directory")
    return roster


@lru_cache(maxsize=8)
def _load_cached(path_text: str, _mtime: float, directory: Directory) -> Roster:
    path = Path(path_text)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        spec = RosterFile.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise RosterInvalid(f"{path}: cannot read the duty roster: {exc}") from exc
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RosterInvalid(f"{path}: {details}") from exc
    for index, shift in enumerate(spec.shifts):
        where = f"{path}: shifts[{index}] ({shift.name})"
        for role in shift.roles:
            if role not in ROLES:
                raise RosterInvalid(f"{where}: unknown role {role!r}")
        for contact_id in shift.contacts:
            if contact_id not in directory.by_id:
                raise RosterInvalid(f"{where}: no contact {contact_id!r} in the contacts directory")
            missing = [r for r in shift.roles if r not in directory.by_id[contact_id].roles]
            if missing:
                raise RosterInvalid(f"{where}: contact {contact_id!r} does not hold role(s) {missing} in the "
                                    f"contacts directory")
    for index, override in enumerate(spec.overrides):
        where = f"{path}: overrides[{index}]"
        for contact_id in (override.replace, override.with_):
            if contact_id not in directory.by_id:
                raise RosterInvalid(f"{where}: no contact {contact_id!r} in the contacts directory")
        if override.role not in directory.by_id[override.with_].roles:
            raise RosterInvalid(f"{where}: {override.with_!r} does not hold role {override.role!r}")
        if override.to <= override.from_:
            raise RosterInvalid(f"{where}: `to` must be after `from`")
    roster = Roster(spec, directory, str(path))
    for role in sorted(roster.rostered_roles):
        gaps = _weekly_gaps(spec, role)
        if gaps:
            raise RosterInvalid(f"{path}: role {role!r} has nobody on duty {', '.join(gaps)} ({spec.timezone}); "
                                f"add an `always` or `weekly` shift that covers those hours")
    return roster


def _weekly_gaps(spec: RosterFile, role: str) -> list[str]:
    """Uncovered stretches of a week by the role's always/weekly shifts, minute by minute."""
    base = [s for s in spec.shifts if role in s.roles and (s.always or s.weekly)]
    monday = datetime(2024, 1, 1)  # a Monday; only weekday and clock matter
    gaps: list[str] = []
    start: datetime | None = None
    minute = timedelta(minutes=1)
    moment = monday
    while moment < monday + timedelta(days=7):
        covered = any(s.covers(moment) for s in base)
        if not covered and start is None:
            start = moment
        if covered and start is not None:
            gaps.append(_span(start, moment))
            start = None
        moment += minute
    if start is not None:
        gaps.append(_span(start, monday + timedelta(days=7)))
    return gaps


def _span(start: datetime, end: datetime) -> str:
    return f"{DAYS[start.weekday()]} {start:%H:%M}–{DAYS[end.weekday()]} {end:%H:%M}"
