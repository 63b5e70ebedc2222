"""Checking the seed service commitments (runbooks.commitments: the catalogue of
targets and their seed references) against what an incident's records say.

Every result names what it measured and the timeline event it came from; a commitment
the record cannot show is "not measured" with the reason, never a target printed as
if it were a measurement.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from reports.i18n import format_duration, word, word_en
from runbooks.commitments import Commitment, Measure, Unit
from runbooks.schema import CommitmentRef

if TYPE_CHECKING:  # reports.metrics imports this module
    from reports.metrics import Fact, Measurement


@dataclass(frozen=True)
class CheckResult:
    commitment: Commitment
    result: str  # pass | fail | pending | not_measured
    #: the measured value: a duration, a share or seconds (None: nothing measured)
    value: timedelta | float | None
    #: the timeline event the measurement came from
    seq: int | None
    #: words, per language: the target, what was measured (with its source), and why (not measured, pending)
    target: dict[str, str]
    measured: dict[str, str]
    note: dict[str, str] = field(default_factory=dict)
    declared: bool = True

    @property
    def measured_value(self) -> timedelta | float | None:
        return self.value


@dataclass(frozen=True)
class Evidence:
    """What the records say about one evidence step."""

    first_started: datetime | None
    first_succeeded: datetime | None
    final_status: str | None  # succeeded | failed | skipped | None (never ran)
    output: Any = None
    started_seq: int | None = None
    succeeded_seq: int | None = None


#: The earlier name, kept for callers that build evidence by hand.
StepTimes = Evidence


def _both(en: str, zh: str) -> dict[str, str]:
    return {"en": en, "zh": zh}


def target_text(commitment: Commitment, level: str) -> dict[str, str]:
    if commitment.measure is Measure.outside:
        return _both("see the commitment", "见承诺内容")
    if commitment.measure is Measure.role_reached:
        return _both("reached when paged", "呼叫即可联系上")
    if commitment.unit is Unit.share:
        sign = ("≥" if commitment.at_least else "≤")
        share = commitment.threshold or 0  # a share commitment always declares its threshold
        return _both(f"{sign} {share * 100:g} %", f"{sign} {share * 100:g}%")
    if commitment.unit is Unit.seconds:
        value = timedelta(seconds=commitment.threshold or 0)
        return _both(f"≤ {format_duration(value, 'en')}", f"≤ {format_duration(value, 'zh')}")
    target = commitment.target_for(level)
    return _both(f"≤ {format_duration(target, 'en')}", f"≤ {format_duration(target, 'zh')}")


def _share(value: float) -> str:
    return f"{value * 100:.1f} %"


def check(commitment: Commitment, ref: CommitmentRef | None, *, level: str, detected: Fact, acknowledged: Fact,
          resolved: Fact, first_delivery: Fact, reached: Fact, steps: dict[str, Evidence],
          figures: list[Measurement], parameters: dict[str, Any], titles: dict[str, dict[str, str]],
          run_ended: bool, runbook_id: str = "the runbook", role_acknowledged: Fact | None = None) -> CheckResult:
    """Pass when the measured value is within the target (the target itself passes).

    role_acknowledged: for a commitment of one role (technical support responds), that role's own first
    acknowledgement; None when nobody holding the role was paged."""
    target = target_text(commitment, level)

    def result(kind: str, value: Any, seq: int | None, measured: dict[str, str],
               note: dict[str, str] | None = None) -> CheckResult:
        return CheckResult(commitment, kind, value, seq, target, measured, note or {}, ref is not None)

    def not_measured(why: dict[str, str]) -> CheckResult:
        return result("not_measured", None, None, _both("—", "—"), why)

    def named(step_ids: list[str], lang: str) -> str:
        return "、".join(titles.get(s, {}).get("zh", s) for s in step_ids) if lang == "zh" else \
            ", ".join(titles.get(s, {}).get("en", s) for s in step_ids)

    if commitment.measure is Measure.outside:
        return not_measured(_both(commitment.unmeasured_en, commitment.unmeasured_zh))

    if commitment.measure is Measure.recorded:
        if not figures:
            if ref is None:
                return not_measured(_both(f"{runbook_id} does not measure it: {commitment.unmeasured_en}",
                                          f"{runbook_id} 不测量此项：{commitment.unmeasured_zh}"))
            if not run_ended:
                return result("pending", None, None, _both("—", "—"),
                              _both(f"waiting for {named(ref.evidence, 'en')}", f"等待 {named(ref.evidence, 'zh')}"))
            return not_measured(_both(f"{named(ref.evidence, 'en') or 'the recording step'} recorded no figure",
                                      f"{named(ref.evidence, 'zh') or '记录步骤'} 未记录数值"))
        last, first = figures[-1], figures[0]
        threshold = float(commitment.threshold or 0)
        ok = last.value >= threshold if commitment.at_least else last.value <= threshold
        if commitment.unit is Unit.share:
            shown_en, shown_zh = _share(last.value), _share(last.value).replace(" %", "%")
            start_en, start_zh = _share(first.value), _share(first.value).replace(" %", "%")
        else:
            shown_en, shown_zh = (format_duration(timedelta(seconds=last.value), lang) for lang in ("en", "zh"))
            start_en, start_zh = (format_duration(timedelta(seconds=first.value), lang) for lang in ("en", "zh"))
        measured = _both(f"{shown_en} (recorded at #{last.seq})", f"{shown_zh}（记录于 #{last.seq}）")
        note = _both(f"at the start {start_en} (#{first.seq})", f"开始时 {start_zh}（#{first.seq}）") \
            if len(figures) > 1 else {}
        return result("pass" if ok else "fail", last.value, last.seq, measured, note)

    if commitment.measure is Measure.role_reached:
        if reached.at is None:
            return not_measured(_both(commitment.unmeasured_en, commitment.unmeasured_zh))
        return result("pass", reached.at - detected.at if detected.at else None, reached.seq,
                      _both(f"delivered to {reached.by} (#{reached.seq})", f"已送达 {reached.by}（#{reached.seq}）"))

    if ref is None:
        why_en = f": {commitment.unmeasured_en}" if commitment.unmeasured_en else ""
        why_zh = f"：{commitment.unmeasured_zh}" if commitment.unmeasured_zh else ""
        return not_measured(_both(f"{runbook_id} does not declare it{why_en}", f"{runbook_id} 未声明此项{why_zh}"))

    bound = commitment.target_for(level)

    def by(fact: Fact | None, what: dict[str, str]) -> CheckResult:
        if fact is None or fact.at is None:
            missing = (fact.missing if fact is not None and fact.missing else
                       _both(f"{what['en']}: never happened", f"{what['zh']}：未发生"))
            if run_ended:
                return result("fail", None, fact.seq if fact else None, _both("never", "未发生"), missing)
            return result("pending", None, None, _both("—", "—"), missing)
        assert detected.at is not None  # the incident's opening (triggered_at): always recorded
        measured = fact.at - detected.at
        source = f", #{fact.seq}" if fact.seq else ""
        words = _both(f"{format_duration(measured, 'en')} ({what['en']}{source})",
                      f"{format_duration(measured, 'zh')}（{what['zh']}{source.replace(', ', '，')}）")
        return result("pass" if measured <= bound else "fail", measured, fact.seq, words)

    if commitment.measure is Measure.acknowledged and commitment.role:
        # Whoever acknowledged first (the scenario lead, say) is not the role responding.
        if role_acknowledged is None:
            return not_measured(_both(commitment.unmeasured_en, commitment.unmeasured_zh))
        if role_acknowledged.at is None:
            if run_ended:
                return not_measured(role_acknowledged.missing)
            return result("pending", None, None, _both("—", "—"), role_acknowledged.missing)
        role_en, role_zh = word_en(commitment.role), word(commitment.role, "zh")
        who = role_acknowledged.by
        return by(role_acknowledged, _both(f"acknowledged by {who} ({role_en})", f"{who}（{role_zh}）确认"))
    if commitment.measure is Measure.acknowledged:
        who = acknowledged.by
        return by(acknowledged, _both(f"acknowledged by {who}", f"{who} 确认"))
    if commitment.measure is Measure.first_delivery:
        return by(first_delivery, _both(f"page delivered to {first_delivery.by}", f"通知送达 {first_delivery.by}"))
    if commitment.measure is Measure.resolved:
        return by(resolved, _both(f"resolved by {resolved.by}", f"由 {resolved.by} 解决"))

    from reports.metrics import Fact as _Fact  # reports.metrics imports this module

    assert ref is not None
    evidence = [steps.get(step_id) for step_id in ref.evidence]
    ran = [e for e in evidence if e is not None and e.final_status not in (None, "skipped")]
    if not ran:
        if run_ended:
            return not_measured(_both(f"{named(ref.evidence, 'en')} did not run",
                                      f"{named(ref.evidence, 'zh')} 未运行"))
        return result("pending", None, None, _both("—", "—"),
                      _both(f"waiting for {named(ref.evidence, 'en')}", f"等待 {named(ref.evidence, 'zh')}"))
    if commitment.measure is Measure.evidence_started:
        starts = sorted((e.first_started, e.started_seq) for e in ran if e.first_started)
        fact = _Fact(starts[0][0], starts[0][1]) if starts else None
        return by(fact, _both(f"{named(ref.evidence, 'en')} started", f"{named(ref.evidence, 'zh')} 开始"))
    if commitment.measure is Measure.evidence_succeeded:
        moments = sorted((e.first_succeeded, e.succeeded_seq) for e in ran if e.first_succeeded)
        fact = _Fact(moments[0][0], moments[0][1]) if moments else None
        return by(fact, _both(f"{named(ref.evidence, 'en')} succeeded", f"{named(ref.evidence, 'zh')} 成功"))

    # restored: the evidence confirmed the answer target holds again, against a target no looser than the seed's
    asked = parameters.get(commitment.parameter or "")
    if asked is not None and timedelta(seconds=float(asked)) > bound:
        return result("fail", timedelta(seconds=float(asked)), None,
                      _both(f"the runbook aimed for {float(asked):g} s", f"预案目标为 {float(asked):g} 秒"),
                      _both("looser than the commitment", "宽于承诺"))
    confirmed = sorted((e.first_succeeded, e.succeeded_seq, e.output) for e in ran if e.first_succeeded)
    if not confirmed:
        return result("fail" if run_ended else "pending", None, None, _both("—", "—"),
                      _both(f"{named(ref.evidence, 'en')} never confirmed the target holds",
                            f"{named(ref.evidence, 'zh')} 未确认目标达成"))
    at, seq, output = confirmed[0]
    last_json = (output or {}).get("last_json") if isinstance(output, dict) else None
    level_now = last_json.get("service_level") if isinstance(last_json, dict) else None
    answer = last_json.get("answer_target_seconds", asked) if isinstance(last_json, dict) else asked
    after = at - detected.at if detected.at else None
    if isinstance(level_now, (int, float)):
        measured = _both(f"{_share(level_now)} answered within {float(answer or 30):g} s once restored "
                         f"(#{seq}, after {format_duration(after, 'en')})",
                         f"恢复后 {_share(level_now).replace(' %', '%')} 在 {float(answer or 30):g} 秒内应答"
                         f"（#{seq}，用时 {format_duration(after, 'zh')}）")
        return result("pass", float(level_now), seq, measured)
    return result("pass", after, seq, _both(f"confirmed by {named(ref.evidence, 'en')} (#{seq})",
                                            f"由 {named(ref.evidence, 'zh')} 确认（#{seq}）"),
                  _both("no figure recorded", "未记录数值"))
