"""Escalation policies: who is paged next, and after how long without an acknowledgement.

Tier 1 is always the notify step's own audience; a policy lists the tiers that
follow. `ack_timeout` on the policy is how long tier 1 has to acknowledge; each
later tier's own `ack_timeout` is how long it has before the next one is paged.
After the last tier the whole sequence is paged again `repeat` times; if still
nobody acknowledges, the step fails and its on_failure policy applies.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from firebreak.config_files import cached_by_mtime, load_model
from firebreak.errors import ConfigInvalid
from runbooks.roles import ROLES


class EscalationInvalid(ConfigInvalid, ValueError):
    """The escalation policies file has problems (one located line each)."""


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[str] = Field(min_length=1)
    ack_timeout: float = Field(gt=0, le=86400, description="seconds this tier has to acknowledge")


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    ack_timeout: float = Field(gt=0, le=86400, description="seconds the step's own audience has to acknowledge")
    tiers: list[Tier] = Field(default_factory=list)
    repeat: int = Field(default=0, ge=0, le=10, description="page the whole sequence again this many times")

    def timeouts(self) -> list[float]:
        """Acknowledgement timeout of tier 1, 2, …"""
        return [self.ack_timeout] + [t.ack_timeout for t in self.tiers]

    def total_seconds(self) -> float:
        return sum(self.timeouts()) * (self.repeat + 1)


class PoliciesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policies: dict[str, Policy]


@cached_by_mtime(EscalationInvalid, "escalation policies")
def load_policies(path: Path) -> dict[str, Policy]:
    spec, _lines = load_model(path, PoliciesFile, EscalationInvalid)
    for name, policy in spec.policies.items():
        for index, tier in enumerate(policy.tiers):
            unknown = [r for r in tier.roles if r not in ROLES]
            if unknown:
                raise EscalationInvalid(f"{path}: policies.{name}.tiers[{index}]: unknown role(s) {unknown}")
    return spec.policies
