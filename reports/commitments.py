"""The seed service commitments a report can check (../shared/SEEDS.md, "Service commitments").

Runbooks declare which apply in their YAML (`commitments:`), naming the steps
that evidence a commitment where the evidence is runbook-specific (which step
tells customers about the workaround, which starts the repair). Keeping that
in the runbook keeps a new contingency to YAML only; this catalogue is the one
place the targets and their seed references live.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from runbooks.schema import CommitmentRef


class Measure(str, enum.Enum):
    acknowledged = "acknowledged"  # detected → incident acknowledged
    first_delivery = "first_delivery"  # detected → first notification delivered to someone
    evidence_succeeded = "evidence_succeeded"  # detected → first success of an evidence step
    evidence_started = "evidence_started"  # detected → first attempt of an evidence step
    resolved = "resolved"  # detected → incident resolved
    restored = "restored"  # an evidence step confirmed the target holds again


@dataclass(frozen=True)
class Commitment:
    id: str
    title_en: str
    title_zh: str
    seed: str
    measure: Measure
    #: target per response level ("*" for every level); for `restored`, the bound on a parameter
    targets: dict[str, timedelta]
    needs_evidence: bool = False
    #: `restored`: the runbook parameter holding the answer target, which must not exceed the target
    parameter: str | None = None

    def target_for(self, level: str) -> timedelta:
        return self.targets.get(level, self.targets.get("*", timedelta(0)))

    def title(self, lang: str) -> str:
        return self.title_zh if lang == "zh" else self.title_en


CATALOGUE: dict[str, Commitment] = {c.id: c for c in [
    Commitment("response_time", "Response: high priority (level I) within 1 h, otherwise within 2 h",
               "响应：高优先级（I 级）1 小时内，其余 2 小时内", "003 (high priority within 1 h; average ≤ 2 h)",
               Measure.acknowledged, {"I": timedelta(hours=1), "*": timedelta(hours=2)}),
    Commitment("specialist_assigned_5min", "Assigned to a specialist within 5 min",
               "5 分钟内分派给专业人员", "003 (assignment to a specialist within 5 min)",
               Measure.first_delivery, {"*": timedelta(minutes=5)}),
    Commitment("workaround_4h", "Temporary workaround communicated within 4 h",
               "4 小时内反馈临时解决方案", "003 (temporary workaround fed back within 4 h)",
               Measure.evidence_succeeded, {"*": timedelta(hours=4)}, needs_evidence=True),
    Commitment("major_fault_repair_4h", "Major-fault emergency repair started within 4 h",
               "重大故障 4 小时内开始抢修", "002 §2.3 (major fault: emergency repair started within 4 h)",
               Measure.evidence_started, {"*": timedelta(hours=4)}, needs_evidence=True),
    Commitment("resolution_24h", "Resolved within 24 h (complex, level I: 48 h)",
               "24 小时内解决（复杂问题、I 级：48 小时）", "002 §4 (ordinary issue within 24 h, complex within 48 h)",
               Measure.resolved, {"I": timedelta(hours=48), "*": timedelta(hours=24)}),
    Commitment("first_answer_30s", "First answer within 30 s restored",
               "恢复 30 秒内首次应答", "000 §5.3.1; 003 (hotline answered within 30 s)",
               Measure.restored, {"*": timedelta(seconds=30)}, needs_evidence=True,
               parameter="answer_target_seconds"),
]}


@dataclass(frozen=True)
class CheckResult:
    commitment: Commitment
    result: str  # pass | fail | pending | not_measured
    measured: timedelta | None
    target: timedelta
    note: str = ""


@dataclass(frozen=True)
class StepTimes:
    """What the records say about one evidence step."""

    first_started: datetime | None
    first_succeeded: datetime | None
    final_status: str | None  # succeeded | failed | skipped | None (never ran)
    output: Any = None


def check(commitment: Commitment, ref: CommitmentRef, *, level: str, detected: datetime,
          acknowledged: datetime | None, resolved: datetime | None, first_delivery: datetime | None,
          steps: dict[str, StepTimes], parameters: dict[str, Any], run_ended: bool) -> CheckResult:
    """Pass when the measured time is at most the target (the target itself passes)."""
    target = commitment.target_for(level)

    def by(moment: datetime | None, what: str) -> CheckResult:
        if moment is None:
            if run_ended:
                return CheckResult(commitment, "fail", None, target, f"{what} never happened")
            return CheckResult(commitment, "pending", None, target, f"{what} has not happened yet")
        measured = moment - detected
        return CheckResult(commitment, "pass" if measured <= target else "fail", measured, target, what)

    if commitment.measure is Measure.acknowledged:
        return by(acknowledged, "acknowledged")
    if commitment.measure is Measure.first_delivery:
        return by(first_delivery, "first notification delivered")
    if commitment.measure is Measure.resolved:
        return by(resolved, "resolved")
    evidence = [steps.get(step_id) for step_id in ref.evidence]
    ran = [times for times in evidence if times is not None and times.final_status not in (None, "skipped")]
    names = ", ".join(ref.evidence)
    if not ran:
        if run_ended:
            return CheckResult(commitment, "not_measured", None, target, f"evidence step(s) {names} did not run")
        return CheckResult(commitment, "pending", None, target, f"waiting for {names}")
    if commitment.measure is Measure.evidence_started:
        starts = [t.first_started for t in ran if t.first_started]  # failed before acting: not started
        return by(min(starts) if starts else None, f"{names} started")
    if commitment.measure is Measure.evidence_succeeded:
        moments = [t.first_succeeded for t in ran if t.first_succeeded]
        return by(min(moments) if moments else None, f"{names} succeeded")
    # restored: the evidence confirmed the level holds again, against a target no looser than the seed's
    asked = parameters.get(commitment.parameter or "")
    if asked is not None and timedelta(seconds=float(asked)) > target:
        return CheckResult(commitment, "fail", timedelta(seconds=float(asked)), target,
                           f"the runbook aimed for {float(asked):g} s, looser than the commitment")
    moments = [t.first_succeeded for t in ran if t.first_succeeded]
    if not moments:
        return CheckResult(commitment, "fail" if run_ended else "pending", None, target,
                           f"{names} never confirmed the target holds")
    measured = timedelta(seconds=float(asked)) if asked is not None else target
    return CheckResult(commitment, "pass", measured, target,
                       f"confirmed by {names} after {(min(moments) - detected).total_seconds():.1f} s")
