"""The seed service commitments runbooks may declare (../shared/SEEDS.md, "Service commitments").

Runbooks declare which apply in their YAML (`commitments:`), naming the steps
that evidence a commitment where the evidence is runbook-specific (which step
tells customers about the workaround, which starts the repair). Keeping that
in the runbook keeps a new contingency to YAML only; this catalogue is the one
place the targets and their seed references live. runbooks.validate checks a
runbook's `commitments:` against it; reports.commitments checks an incident's
records against the targets.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta


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
