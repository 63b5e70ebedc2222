"""Report wording in English and Chinese, and how times and durations are written.

One template per format reads every label from here, so both languages always
carry the same sections and the same facts."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from runbooks.roles import ROLES

LANGUAGES = ("en", "zh")

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "report_title": "Post-incident report",
        "drill_banner": "DRILL — this incident was an exercise, not a real outage.",
        "attention_banner": "NEEDS ATTENTION — the incident is still {status} and no runbook run is driving it "
                            "(the run {run_state}). Someone must take it over by hand: see the steps below that "
                            "did not run or did not succeed.",
        "header": "Header", "incident": "Incident", "title": "Title", "runbook": "Runbook", "version": "version",
        "level": "Response level", "final_status": "Final status", "run_state": "Run outcome", "run_error": "Run error",
        "kind": "Drill or real", "drill": "drill", "real": "real", "commander": "Commander",
        "roles": "Roles involved", "flow_run": "Prefect flow run", "generated": "Generated",
        "summary_impact": "Summary and impact", "what_happened": "What happened", "affected": "Who was affected",
        "duration": "For how long", "parameters": "Parameters",
        "detection": "Detection", "source": "Source", "alerts": "Alerts", "fingerprint": "Fingerprint",
        "no_alert": "No alert: the incident was opened by {source}.",
        "milestones": "Milestones and metrics", "milestone": "Milestone", "utc": "UTC", "local": "Local",
        "metric": "Metric", "value": "Value", "measured_from": "Measured from",
        "timeline": "Timeline", "seq": "#", "time": "Time (UTC)", "actor": "Actor", "step": "Step",
        "phase": "Phase", "status": "Status", "what": "What was intended / what happened", "attempt": "Attempt",
        "steps": "Steps", "attempts": "Attempts", "policy": "Failure policy", "output": "Output / error",
        "notifications": "Notifications", "who": "Who", "role": "Role", "channel": "Channel (redacted)",
        "created": "Created", "sent": "Sent / delivered", "acknowledged": "Acknowledged",
        "escalation": "Escalation", "no_notifications": "Nobody was notified.",
        "decisions": "Decisions", "decided_by": "Who", "decision": "Decision", "comment": "Comment", "when": "When",
        "no_decisions": "No approvals, rejections or acknowledgements were recorded.",
        "commitments": "Commitment checks", "commitment": "Commitment", "target": "Target",
        "measured": "Measured", "result": "Result", "seed_ref": "Seed",
        "no_commitments": "The runbook declares no service commitments.",
        "review": "Root cause, lessons and action items",
        "review_pending": "REVIEW PENDING: the root cause, lessons and action items have not been entered yet. "
                          "Enter them with `firebreak review {id}` or the `review-incident` flow in the Prefect UI.",
        "root_cause": "Root cause", "lessons": "Lessons", "action_items": "Action items", "owner": "Owner",
        "due": "Due", "entered_by": "Entered by", "revision": "revision",
        "integrity": "Integrity", "chain_ok": "The audit chain is intact.",
        "chain_broken": "THE AUDIT CHAIN IS BROKEN: {problem} at event #{seq}: {detail}",
        "head_hash": "Head hash", "events_count": "Events", "verify_how": "Verify with",
        "verify_note": "Each event stores sha256(previous hash + canonical JSON of the event), and every head of "
                       "the chain is signed with the audit key, which the records database does not hold (global "
                       "seal #{seal}). Published heads are anchored in Prefect's own database (variable `{anchor}`): "
                       "`firebreak audit verify {id}` checks the record against both and names any tampering. If a "
                       "review or a late acknowledgement extends the chain after this report, "
                       "`firebreak audit verify {id} --expect-head HASH` says \"extended since\" this head.",
        "review_tampered": "Review record does not match the timeline",
        "signoff": "Sign-off", "prepared_by": "Prepared by", "reviewed_by": "Reviewed by", "date": "Date",
        "pass": "PASS", "fail": "FAIL", "pending": "PENDING", "not_measured": "NOT MEASURED",
        "never": "never", "none": "—",
        "m_started": "Started", "m_detected": "Detected", "m_acknowledged": "Acknowledged",
        "m_mitigated": "Mitigated", "m_resolved": "Resolved", "m_closed": "Closed", "m_run_ended": "Run ended",
        "d_ttd": "Time to detect", "d_tta": "Time to acknowledge", "d_ttm": "Time to mitigate",
        "d_ttr": "Time to resolve", "d_total": "Incident open (to closure or run end)",
        "from_started": "started", "from_detected": "detected",
        "index_title": "Incident reports", "breaches": "Commitment breaches", "reports": "Reports",
        "intended": "intended", "happened": "happened",
        "source_event": "From event", "d_ttc": "Time to close", "not_measured_why": "not measured",
        "key_facts": "Key figures", "how": "How",
        "charts": "Charts", "chart_gantt": "Timeline of the steps, with milestones, pages and acknowledgements",
        "chart_watch": "What “{step}” watched: {condition}", "chart_pages": "pages", "chart_acks": "acknowledged",
        "chart_holds": "condition held", "chart_threshold": "threshold", "chart_seconds": "time since detection",
        "http_status": "HTTP status",
        "chart_held_of": "the condition held in {held} of {count} checks",
        "charts_md": "The timeline (Gantt) and the metric charts are drawn in the HTML report; what each watched "
                     "metric did:",
        "chart_none": "No step watched a metric in this incident.",
        "drill_score": "Scored against the plan: {passed} met, {failed} missed, {unmeasured} not measured, "
                       "{pending} pending, of {total} commitments.",
        "declared": "declared by the runbook", "undeclared": "not declared by the runbook",
        "raw_output": "raw output", "phase_group": "{phase} (#{first}–#{last}, {count} {events})",
        "phase_after_closure": "After closure", "full_timeline": "Every event as recorded ({count})",
        "closed_how": "What closed it", "resolved_how": "What resolved it",
        "after_closure_note": "Recorded after the incident closed:",
        "ack_by_person": "acknowledged by {who} (#{seq})", "no_ack_here": "—",
        "timed_out": "timed out", "what_started": "started", "took": "took",
        "full_timeline_md": "The full timeline ({count} events) is in the HTML report and `firebreak export {id}`.",
        "gate": "Gate", "kind_acknowledged": "acknowledged", "kind_ack-repeated": "acknowledged again (no change)",
        "kind_approved": "approved", "kind_rejected": "rejected", "kind_timed-out": "timed out",
        "kind_escalated": "escalated (nobody decided)", "kind_status": "status", "audit_status": "Audit",
        "unverified_not-a-contact": "unverified: not a contact",
        "unverified_directory-unreadable": "unverified: the contacts directory could not be read",
    },
    "zh": {
        "report_title": "事件复盘报告",
        "drill_banner": "演练 —— 本事件为应急演练，并非真实故障。",
        "attention_banner": "需要人工处理 —— 事件仍处于「{status}」状态，已没有预案运行在处理（运行{run_state}）。"
                            "请人工接手：见下文未运行或未成功的步骤。",
        "header": "概要", "incident": "事件编号", "title": "标题", "runbook": "预案", "version": "版本",
        "level": "响应级别", "final_status": "最终状态", "run_state": "执行结果", "run_error": "执行错误",
        "kind": "演练/真实", "drill": "演练", "real": "真实", "commander": "指挥",
        "roles": "参与角色", "flow_run": "Prefect 流程运行", "generated": "生成时间",
        "summary_impact": "摘要与影响", "what_happened": "发生了什么", "affected": "影响对象", "duration": "持续时间",
        "parameters": "参数",
        "detection": "发现", "source": "来源", "alerts": "告警", "fingerprint": "指纹",
        "no_alert": "无告警：事件由 {source} 发起。",
        "milestones": "里程碑与指标", "milestone": "里程碑", "utc": "UTC", "local": "本地时间",
        "metric": "指标", "value": "数值", "measured_from": "起算点",
        "timeline": "时间线", "seq": "#", "time": "时间 (UTC)", "actor": "执行者", "step": "步骤",
        "phase": "阶段", "status": "状态", "what": "意图 / 结果", "attempt": "尝试",
        "steps": "步骤", "attempts": "尝试次数", "policy": "失败策略", "output": "输出 / 错误",
        "notifications": "通知", "who": "接收人", "role": "角色", "channel": "渠道（已脱敏）",
        "created": "创建", "sent": "已发送/送达", "acknowledged": "已确认",
        "escalation": "升级", "no_notifications": "未通知任何人。",
        "decisions": "决策", "decided_by": "决策人", "decision": "决定", "comment": "意见", "when": "时间",
        "no_decisions": "没有记录审批、驳回或确认。",
        "commitments": "服务承诺核查", "commitment": "承诺", "target": "目标", "measured": "实测",
        "result": "结果", "seed_ref": "依据",
        "no_commitments": "该预案未声明服务承诺。",
        "review": "根本原因、经验教训与整改措施",
        "review_pending": "复盘待完成：尚未录入根本原因、经验教训与整改措施。"
                          "请使用 `firebreak review {id}` 或 Prefect 界面中的 `review-incident` 流程录入。",
        "root_cause": "根本原因", "lessons": "经验教训", "action_items": "整改措施", "owner": "负责人",
        "due": "截止日期", "entered_by": "录入人", "revision": "版本",
        "integrity": "完整性", "chain_ok": "审计链完整。",
        "chain_broken": "审计链已被破坏：第 {seq} 条事件 {problem}：{detail}",
        "head_hash": "链头哈希", "events_count": "事件数", "verify_how": "校验命令",
        "verify_note": "每条事件保存 sha256(上一条哈希 + 事件的规范 JSON)，每个链头都用审计密钥签名，密钥不在"
                       "记录数据库中（全局封印号 #{seal}）。已发布的链头锚定在 Prefect 自己的数据库中（变量 "
                       "`{anchor}`）：`firebreak audit verify {id}` 与二者比对并指出篡改类型。本报告之后若复盘或"
                       "迟到的确认延长了链，`firebreak audit verify {id} --expect-head HASH` 会显示自此链头起“已延长”。",
        "review_tampered": "复盘记录与时间线不一致",
        "signoff": "签字确认", "prepared_by": "编写人", "reviewed_by": "审核人", "date": "日期",
        "pass": "达标", "fail": "未达标", "pending": "待定", "not_measured": "未测量",
        "never": "未发生", "none": "—",
        "m_started": "开始", "m_detected": "发现", "m_acknowledged": "确认",
        "m_mitigated": "缓解", "m_resolved": "解决", "m_closed": "关闭", "m_run_ended": "执行结束",
        "d_ttd": "发现用时", "d_tta": "确认用时", "d_ttm": "缓解用时", "d_ttr": "解决用时",
        "d_total": "事件持续（至关闭或执行结束）",
        "from_started": "开始", "from_detected": "发现",
        "index_title": "事件报告", "breaches": "未达标承诺", "reports": "报告",
        "intended": "意图", "happened": "结果",
        "source_event": "来源事件", "d_ttc": "关闭用时", "not_measured_why": "未测量",
        "key_facts": "关键指标", "how": "方式",
        "charts": "图表", "chart_gantt": "步骤时间线（含里程碑、通知与确认）",
        "chart_watch": "「{step}」监测的指标：{condition}", "chart_pages": "通知", "chart_acks": "确认",
        "chart_holds": "条件成立", "chart_threshold": "阈值", "chart_seconds": "自发现起的时间",
        "http_status": "HTTP 状态码",
        "chart_held_of": "{count} 次检查中条件成立 {held} 次",
        "charts_md": "时间线（甘特图）与指标图表见 HTML 报告；各监测指标的变化：",
        "chart_none": "本事件没有步骤监测指标。",
        "drill_score": "对照预案评分：共 {total} 项承诺，达标 {passed} 项，未达标 {failed} 项，未测量 {unmeasured} 项，"
                       "待定 {pending} 项。",
        "declared": "预案已声明", "undeclared": "预案未声明",
        "raw_output": "原始输出", "phase_group": "{phase}（#{first}–#{last}，共 {count} 条{events}）",
        "phase_after_closure": "关闭之后", "full_timeline": "全部事件记录（{count} 条）",
        "closed_how": "关闭方式", "resolved_how": "解决方式",
        "after_closure_note": "事件关闭后记录：",
        "ack_by_person": "{who} 确认（#{seq}）", "no_ack_here": "—",
        "timed_out": "超时", "what_started": "开始", "took": "用时",
        "full_timeline_md": "完整时间线（{count} 条事件）见 HTML 报告及 `firebreak export {id}`。",
        "gate": "审批", "kind_acknowledged": "确认", "kind_ack-repeated": "再次确认（无变化）",
        "kind_approved": "批准", "kind_rejected": "驳回", "kind_timed-out": "超时",
        "kind_escalated": "已升级（无人决定）", "kind_status": "状态", "audit_status": "审计",
        "unverified_not-a-contact": "未核实：非通讯录联系人",
        "unverified_directory-unreadable": "未核实：通讯录无法读取",
    },
}

STATUS_WORDS = {
    "zh": {"triggered": "已触发", "acknowledged": "已确认", "mitigated": "已缓解", "resolved": "已解决",
           "closed": "已关闭", "completed": "完成", "failed": "失败", "crashed": "崩溃", "cancelled": "已取消",
           "running": "运行中", "pending": "等待中", "succeeded": "成功", "skipped": "跳过", "reused": "复用",
           "started": "开始", "delivered": "已送达", "sending": "发送中", "abort": "中止", "continue": "继续",
           "escalate": "升级", "modified": "被修改", "deleted": "被删除", "inserted": "被插入",
           "reordered": "被调换顺序", "edited": "被修改", "truncated": "尾部被截断",
           "rewritten": "整条链被重写", "incident-deleted": "整个事件被删除", "signature-invalid": "链头签名无效",
           "anchor-mismatch": "与锚点不一致", "not run": "未运行", "approved": "批准", "rejected": "驳回",
           "proceeded-on-timeout": "超时后按策略继续", "refused-on-timeout": "超时后拒绝", "proceed": "继续",
           "awaiting-approval": "等待审批", "approval-timed-out": "审批超时", "approval-escalated": "审批已升级",
           "info": "记录", "escalating": "升级中", "acknowledged-again": "再次确认", "ack-repeated": "再次确认",
           "monitor-resolved": "监控报告已恢复", "monitor-acknowledged": "监控已确认",
           "monitor-late-resolve": "关闭后监控报告已恢复",
           "monitor-late-ack": "关闭后监控确认",
           "link": "确认链接", "cli": "命令行", "ui": "Prefect 界面", "monitor": "监控", "status": "状态",
           "implied": "隐含", "opened": "创建", "alert": "告警", "ok": "正常", "down": "故障",
           "normal": "正常", "ivr_diversion": "IVR 分流", "website": "网站", "social_media": "社交媒体",
           "forum": "论坛", "queue_announcement": "排队播报", "intent": "意图", "outcome": "结果", "note": "记录",
           "run-completed": "运行完成", "run-failed": "运行失败", "run-crashed": "运行崩溃",
           "run-cancelled": "运行取消", "run-attached": "运行已关联", "report-failed": "报告失败",
           "intent-refused": "拒绝执行", "alarm-failed": "告警失败",
           # Every other timeline status the code records (tests/reports: a Chinese report prints none in English).
           "escalation-stopped": "停止升级", "waiting-for-gate": "等待审批结果", "not-started": "未开始",
           "run-stopping": "运行停止中", "run-refused": "运行被拒绝", "run-lease-lost": "运行失去控制权",
           "run-cancel-requested": "已请求取消运行", "rerun-requested": "已请求重新运行",
           "resume-requested": "已请求恢复运行", "operator-note": "操作员备注", "ack-note": "确认备注",
           "review": "复盘已录入", "level-changed": "级别变更", "level-page-failed": "级别通知失败",
           "command-handed-over": "指挥权移交", "handover-page-failed": "移交通知失败", "alarm": "运行失败告警",
           "alarm-unanswered": "告警无人确认", "claimed": "已认领", "firing": "告警中", "stopping": "停止中",
           "escalated": "已升级", "proceeded": "已继续", "refused": "已拒绝", "interrupted": "被中断",
           "failed-over": "已切换", "drill policy": "演练策略",
           # records.audit Verification.status (the served index's audit column)
           "extended": "此后已延长", "not-anchored": "未锚定", "anchor-unchecked": "未核对锚点", "broken": "已破坏",
           # roles (runbooks.roles)
           "commander_in_chief": "总指挥", "scenario_lead": "场景负责人", "on_site_commander": "现场指挥",
           "duty_manager": "值班经理", "senior_agent": "高级坐席", "junior_agent": "初级坐席",
           "technical_support": "技术支持", "data_analyst": "数据分析员", "crisis_management": "危机管理小组",
           "customer_service": "客服部", "marketing": "市场部", "logistics": "后勤保障部", "reserve_staff": "后备人员",
           "product_safety": "产品安全部", "administration": "行政部", "information_coordinator": "信息联络员",
           "drill": "演练", "operator": "操作员"},
}


def _role_name(description: str) -> str:
    # runbooks.roles: "Scenario lead (deputy GM): owns the plan …" → "Scenario lead"
    return description.split(":", 1)[0].split(" (", 1)[0].strip()


#: Role ids in English words (runbooks.roles), so an English report reads "Scenario lead", not `scenario_lead`.
ROLE_WORDS_EN = {role: _role_name(text) for role, text in ROLES.items()}


def word_en(value: str) -> str:
    """A role id in English words (other words are printed as recorded in English)."""
    return ROLE_WORDS_EN.get(value, value)


def labels(lang: str) -> dict[str, str]:
    if lang not in LABELS:
        raise ValueError(f"unknown report language {lang!r}; expected one of {', '.join(LANGUAGES)}")
    return LABELS[lang]


def word(value: str | None, lang: str) -> str:
    """A status or policy word in the report's language."""
    if value is None:
        return "—"
    return STATUS_WORDS.get(lang, {}).get(value, value)


def unverified(data: dict[str, Any] | None) -> str | None:
    """Why a gate's recorded approver is unverified (tasks.approval.UNVERIFIED), or None: a contact, or
    recorded before approvers were checked against the contacts (no `approver_verified`)."""
    data = data or {}
    if data.get("approver_verified") is not False:
        return None
    return str(data.get("approver_unverified") or "not-a-contact")


def approver(name: str, reason: str | None, lang: str) -> str:
    """A gate's approver as the report shows them: the name, marked when the contacts do not know it."""
    if not reason:
        return name
    texts = LABELS.get(lang, LABELS["en"])
    mark = texts.get(f"unverified_{reason}", texts["unverified_not-a-contact"])
    return f"{name}（{mark}）" if lang == "zh" else f"{name} ({mark})"


def roles(value: str | None, lang: str) -> str:
    """A comma-separated list of role ids in the report's language."""
    names = [r.strip() for r in (value or "").split(",") if r.strip()]
    if lang == "zh":
        return "、".join(word(r, lang) for r in names)
    return ", ".join(word_en(r) for r in names)


def format_utc(at: datetime | None) -> str:
    if at is None:
        return "—"
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def format_local(at: datetime | None, zone: ZoneInfo) -> str:
    if at is None:
        return "—"
    local = at.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()} ({zone.key})"


def format_duration(delta: timedelta | None, lang: str) -> str:
    if delta is None:
        return "—"
    seconds = delta.total_seconds()
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    units = ("h", "min", "s") if lang == "en" else ("小时", "分", "秒")
    if seconds < 60:
        return f"{sign}{seconds:.1f} {units[2]}" if lang == "en" else f"{sign}{seconds:.1f} {units[2]}"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours} {units[0]} {minutes:02d} {units[1]}"
    return f"{sign}{minutes} {units[1]} {secs:02d} {units[2]}"
