"""Who is engaged at each response level (seed 000 §6.3): configuration, not runbook text.

| level | engaged |
| III | the relevant department |
| II  | the dedicated task group plus the scenario lead |
| I   | everyone involved, and the commander-in-chief |

`levels` maps a level to group names and roles; `groups` says, per runbook
(or `default`), which roles form its department, task group and "everyone".
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from firebreak.config_files import cached_by_mtime, load_model
from firebreak.errors import ConfigInvalid
from runbooks.roles import ROLES


class RoutingInvalid(ConfigInvalid, ValueError):
    """The level routing file (level → roles and groups) has problems."""


#: I: the commander-in-chief; II: the scenario lead; III: the on-site commander.
DEFAULT_COMMANDERS = {"I": "commander_in_chief", "II": "scenario_lead", "III": "on_site_commander"}


class RoutingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    levels: dict[str, list[str]]
    groups: dict[str, dict[str, list[str]]] = Field(description="runbook id (or `default`) → group name → roles")
    #: Who commands an incident of each level until command is handed over (the live view and
    #: `firebreak incident handover`): a role; whoever holds it on duty is the commander.
    commanders: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_COMMANDERS))


class LevelRouting:
    def __init__(self, spec: RoutingFile):
        self.spec = spec

    def roles_for(self, runbook_id: str, level: str) -> list[str]:
        groups = self.spec.groups.get(runbook_id, self.spec.groups["default"])
        roles: list[str] = []
        for name in self.spec.levels[level]:
            for role in groups.get(name, [name]):
                if role not in roles:
                    roles.append(role)
        return roles

    def newly_engaged(self, runbook_id: str, old_level: str, new_level: str) -> list[str]:
        """The roles `new_level` engages that `old_level` did not (paged when the level changes)."""
        before = set(self.roles_for(runbook_id, old_level))
        return [role for role in self.roles_for(runbook_id, new_level) if role not in before]

    def commander_role(self, level: str) -> str:
        return self.spec.commanders.get(level, DEFAULT_COMMANDERS.get(level, "on_site_commander"))

    def all_roles(self) -> set[str]:
        return {r for runbook in self.spec.groups for level in self.spec.levels
                for r in self.roles_for(runbook, level)}


@cached_by_mtime(RoutingInvalid, "level routing")
def load_routing(path: Path) -> LevelRouting:
    spec, _lines = load_model(path, RoutingFile, RoutingInvalid)
    if set(spec.levels) != {"I", "II", "III"}:
        raise RoutingInvalid(f"{path}: levels must give exactly I, II and III (got {', '.join(spec.levels)})")
    if "default" not in spec.groups:
        raise RoutingInvalid(f"{path}: groups needs a `default` entry for runbooks not listed")
    for runbook, groups in spec.groups.items():
        for group, roles in groups.items():
            unknown = [r for r in roles if r not in ROLES]
            if unknown:
                raise RoutingInvalid(f"{path}: groups.{runbook}.{group}: unknown role(s) {unknown}")
    for level, role in spec.commanders.items():
        if level not in spec.levels or role not in ROLES:
            raise RoutingInvalid(f"{path}: commanders.{level}: expected a level (I, II, III) and a known role, "
                                 f"got {role!r}")
    for level, names in spec.levels.items():
        for name in names:
            if name not in ROLES and not all(name in g for g in spec.groups.values()):
                raise RoutingInvalid(f"{path}: levels.{level}: {name!r} is neither a role nor a group defined for "
                                     f"every runbook in groups")
    return LevelRouting(spec)
