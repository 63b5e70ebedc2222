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
from dataclasses import dataclass, field
from datetime import timedelta


class Measure(str, enum.Enum):
    acknowledged = "acknowledged"  # detected → first acknowledgement by a person or a monitor
    first_delivery = "first_delivery"  # detected → first notification delivered to someone
    evidence_succeeded = "evidence_succeeded"  # detected → first success of an evidence step
    evidence_started = "evidence_started"  # detected → first attempt of an evidence step
    resolved = "resolved"  # detected → incident resolved
    restored = "restored"  # an evidence step confirmed the target holds again
    #: a figure a runbook step recorded: a `record` note whose data holds `measurements: {metric: value}`
    recorded = "recorded"
    role_reached = "role_reached"  # a page to someone holding `role` was delivered
    #: nothing Firebreak records can show it; the report says why (`unmeasured_en`/`_zh`)
    outside = "outside"


class Unit(str, enum.Enum):
    duration = "duration"  # targets per level, as timedelta
    seconds = "seconds"  # a recorded figure in seconds, at most `threshold`
    share = "share"  # a recorded share 0..1, compared with `threshold`


@dataclass(frozen=True)
class Commitment:
    id: str
    title_en: str
    title_zh: str
    seed: str
    measure: Measure
    #: target per response level ("*" for every level); for `restored`, the bound on a parameter
    targets: dict[str, timedelta] = field(default_factory=dict)
    needs_evidence: bool = False
    #: `restored`: the runbook parameter holding the answer target, which must not exceed the target
    parameter: str | None = None
    #: `recorded`: the figure's name in a recorded `measurements` mapping, its unit, bound and direction
    metric: str | None = None
    unit: Unit = Unit.duration
    threshold: float | None = None
    at_least: bool = False
    #: `role_reached`: the role whose page must have been delivered; `acknowledged`: the role whose own
    #: acknowledgement counts (technical support responds: not whoever acknowledged first)
    role: str | None = None
    #: why no record can show it (Measure.outside), or why it is not measured when no runbook step records it
    unmeasured_en: str = ""
    unmeasured_zh: str = ""
    #: `seed` in Chinese: the reference as the Chinese report prints it (the originals are Chinese)
    seed_zh: str = ""

    def target_for(self, level: str) -> timedelta:
        return self.targets.get(level, self.targets.get("*", timedelta(0)))

    def title(self, lang: str) -> str:
        return self.title_zh if lang == "zh" else self.title_en

    def seed_in(self, lang: str) -> str:
        return (self.seed_zh or self.seed) if lang == "zh" else self.seed

    def unmeasured(self, lang: str) -> str:
        return self.unmeasured_zh if lang == "zh" else self.unmeasured_en


_NO_FIGURES_EN = "no step of this runbook records this figure ({metric})"
_NO_FIGURES_ZH = "本预案没有步骤记录该数值（{metric}）"


def _recorded(id: str, title_en: str, title_zh: str, seed: str, seed_zh: str, metric: str, unit: Unit,
              threshold: float, at_least: bool = False) -> Commitment:
    return Commitment(id, title_en, title_zh, seed, Measure.recorded, metric=metric, unit=unit, threshold=threshold,
                      at_least=at_least, unmeasured_en=_NO_FIGURES_EN.format(metric=metric),
                      unmeasured_zh=_NO_FIGURES_ZH.format(metric=metric), seed_zh=seed_zh)


#: Every service commitment of the seed plan (../shared/SEEDS.md), in the order the report lists them.
#: A report lists all of them: checked where the runbook declares them (or recorded the figure),
#: otherwise "not measured" with the reason.
CATALOGUE: dict[str, Commitment] = {c.id: c for c in [
    Commitment("response_time", "Response: high priority (level I) within 1 h, otherwise within 2 h",
               "响应：高优先级（I 级）1 小时内，其余 2 小时内", "003 (high priority within 1 h; average ≤ 2 h)",
               Measure.acknowledged, {"I": timedelta(hours=1), "*": timedelta(hours=2)},
               seed_zh="003（高优先级 1 小时内响应；平均响应不超过 2 小时）"),
    Commitment("specialist_assigned_5min", "Assigned to a specialist within 5 min",
               "5 分钟内分派给专业人员", "003 (assignment to a specialist within 5 min)",
               Measure.first_delivery, {"*": timedelta(minutes=5)}, seed_zh="003（5 分钟内分派给专业人员）"),
    Commitment("workaround_4h", "Temporary workaround communicated within 4 h",
               "4 小时内反馈临时解决方案", "003 (temporary workaround fed back within 4 h)",
               Measure.evidence_succeeded, {"*": timedelta(hours=4)}, needs_evidence=True,
               unmeasured_en="the runbook names no step that tells customers a workaround",
               unmeasured_zh="本预案没有指明向客户反馈临时方案的步骤", seed_zh="003（4 小时内反馈临时解决方案）"),
    Commitment("major_fault_repair_4h", "Major-fault emergency repair started within 4 h",
               "重大故障 4 小时内开始抢修", "002 §2.3 (major fault: emergency repair started within 4 h)",
               Measure.evidence_started, {"*": timedelta(hours=4)}, needs_evidence=True,
               unmeasured_en="the runbook names no repair step (not a fault of equipment)",
               unmeasured_zh="本预案没有指明抢修步骤（非设备故障）", seed_zh="002 §2.3（重大故障 4 小时内开始抢修）"),
    Commitment("resolution_24h", "Resolved within 24 h (complex, level I: 48 h)",
               "24 小时内解决（复杂问题、I 级：48 小时）", "002 §4 (ordinary issue within 24 h, complex within 48 h)",
               Measure.resolved, {"I": timedelta(hours=48), "*": timedelta(hours=24)},
               seed_zh="002 §4（一般问题 24 小时内解决，复杂问题 48 小时内）"),
    Commitment("first_answer_30s", "Hotline first answer within 30 s restored",
               "恢复热线 30 秒内首次应答", "000 §5.3.1; 003 (hotline answered within 30 s)",
               Measure.restored, {"*": timedelta(seconds=30)}, needs_evidence=True,
               parameter="answer_target_seconds",
               unmeasured_en="the runbook does not watch the hotline's answer times",
               unmeasured_zh="本预案不监测热线应答时间", seed_zh="000 §5.3.1；003（热线 30 秒内接听）"),
    _recorded("chat_reply_1min", "Online chat answered within 1 min", "在线客服 1 分钟内回复",
              "000 §5.3.1; 003 (online chat reply within 1 min)", "000 §5.3.1；003（在线客服 1 分钟内回复）",
              "chat_first_reply_seconds", Unit.seconds, 60),
    _recorded("social_media_30min", "Social media answered within 30 min", "社交媒体 30 分钟内回复",
              "000 §5.3.1; 003 (social media within 30 min)", "000 §5.3.1；003（社交媒体 30 分钟内回复）",
              "social_first_reply_seconds", Unit.seconds, 1800),
    _recorded("ivr_greeting_15s", "IVR greeting at most 15 s", "语音导航（IVR）问候不超过 15 秒",
              "003 (IVR greeting at most 15 s)", "003（语音导航问候不超过 15 秒）", "ivr_greeting_seconds",
              Unit.seconds, 15),
    _recorded("first_contact_resolution_85", "First-contact resolution at least 85 %", "首次联系解决率不低于 85%",
              "003 (first-contact resolution ≥ 85 %)", "003（首次联系解决率不低于 85%）", "first_contact_resolution",
              Unit.share, 0.85, at_least=True),
    _recorded("satisfaction_90", "Customer satisfaction at least 90 %", "客户满意度不低于 90%",
              "003; 001 (satisfaction ≥ 90 %)", "003；001（满意度不低于 90%）", "satisfaction", Unit.share, 0.90,
              at_least=True),
    _recorded("complaint_rate_5", "Complaint rate at most 5 %", "投诉率不高于 5%",
              "001 (complaint rate ≤ 5 %)", "001（投诉率不高于 5%）", "complaint_rate", Unit.share, 0.05),
    # Technical support's own acknowledgement, not the incident's first (which may be the scenario lead's).
    Commitment("technical_support_24h", "Technical support responds within 24 h", "技术支持 24 小时内响应",
               "002 §2.3 (technical support responds within 24 h)", Measure.acknowledged,
               {"*": timedelta(hours=24)}, role="technical_support",
               unmeasured_en="nobody in technical support was paged in this incident",
               unmeasured_zh="本事件未呼叫技术支持人员", seed_zh="002 §2.3（技术支持 24 小时内响应）"),
    Commitment("technical_support_7x24", "Technical support reachable 7×24", "技术支持 7×24 小时可联系",
               "002 §4 (technical support 7×24)", Measure.role_reached, role="technical_support",
               unmeasured_en="nobody in technical support was paged in this incident",
               unmeasured_zh="本事件未呼叫技术支持人员", seed_zh="002 §4（技术支持 7×24 小时服务）"),
    Commitment("chat_silence_care_5min", "Chat customer silent 5 min gets a care message or a human",
               "在线客户沉默 5 分钟须发送关怀消息或转人工", "003 (chat silence of 5 min)", Measure.outside,
               unmeasured_en="individual chat sessions are not in Firebreak's records",
               unmeasured_zh="Firebreak 的记录不包含单个在线会话", seed_zh="003（在线客户沉默 5 分钟）"),
    Commitment("walk_in_on_the_spot", "Walk-in points handled on the spot", "线下网点现场处理",
               "000 §5.3.1 (walk-in points on the spot)", Measure.outside,
               unmeasured_en="walk-in service points report nothing to Firebreak",
               unmeasured_zh="线下网点不向 Firebreak 报送数据", seed_zh="000 §5.3.1（线下网点现场处理）"),
    Commitment("email_24h_owner", "Email unanswered for 24 h gets a named owner (queue checked hourly)",
               "邮件 24 小时未回复须指定负责人（每小时检查队列）", "003 (email queue checked hourly)",
               Measure.outside, unmeasured_en="the email queue is not in Firebreak's records",
               unmeasured_zh="邮件队列不在 Firebreak 的记录中", seed_zh="003（每小时检查邮件队列）"),
    Commitment("satisfaction_call_3d", "High-priority cases get a satisfaction call within 3 days",
               "高优先级个案 3 天内回访满意度", "003 (satisfaction call within 3 days)", Measure.outside,
               unmeasured_en="follow-up calls happen after the run; enter them in the review",
               unmeasured_zh="回访发生在预案运行之后；请在复盘中录入", seed_zh="003（3 天内满意度回访）"),
]}
