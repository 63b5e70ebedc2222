"""Steps and timeline events in words, in the reader's language.

A step's output is summarised by what its action did ("HTTP 200 in 12 ms; active node
standby", "delivered to 3 of 3; acknowledged by Li Wei via link") instead of raw JSON
(the raw output stays available, folded, in the HTML). Timeline events are told from
their structured fields, so a Chinese report never prints the English summary a step
recorded; the English report shows the summary as recorded.
"""
from __future__ import annotations

from typing import Any

from reports import i18n
from reports.i18n import word

#: Fields of a JSON answer worth a word, in order, with their labels (en, zh) and how to show them.
_FIELDS: list[tuple[str, str, str, str]] = [
    ("status", "status", "状态", "text"),
    ("active_node", "active node", "活动节点", "text"),
    ("request_rate", "request rate", "请求速率", "rate"),
    ("load_threshold", "threshold", "阈值", "rate"),
    ("queue_length", "queue", "排队", "int"),
    ("service_level", "service level", "服务水平", "share"),
    ("agents_online", "agents online", "在线坐席", "int"),
    ("called_in", "called in", "召回", "int"),
    ("overtime_agents", "overtime", "加班", "int"),
    ("volunteers", "volunteers", "志愿者", "int"),
    ("routing_mode", "routing", "路由", "text"),
    ("human_chat_share", "human chat share", "人工在线客服占比", "share"),
    ("key_customer_channel", "key-customer channel", "重点客户通道", "bool"),
    ("channel", "channel", "渠道", "text"),
    ("isolated", "isolated", "已隔离", "bool"),
    ("failover_count", "fail-overs", "切换次数", "int"),
]
MAX_FIELDS = 4


def _value(value: Any, kind: str, lang: str) -> str:
    if kind == "share" and isinstance(value, (int, float)):
        return f"{value * 100:.1f} %" if lang == "en" else f"{value * 100:.1f}%"
    if kind == "rate" and isinstance(value, (int, float)):
        return f"{value:g} req/s" if lang == "en" else f"{value:g} 次/秒"
    if kind == "bool":
        return ("yes" if value else "no") if lang == "en" else ("是" if value else "否")
    if kind == "text" and isinstance(value, str):
        return word(value, lang)
    return str(value)


def json_words(body: Any, lang: str) -> str:
    if not isinstance(body, dict):
        return ""
    parts = []
    for key, en, zh, kind in _FIELDS:
        if key in body and body[key] is not None and not isinstance(body[key], (dict, list)):
            parts.append(f"{en} {_value(body[key], kind, lang)}" if lang == "en"
                         else f"{zh}：{_value(body[key], kind, lang)}")
        if len(parts) == MAX_FIELDS:
            break
    return ", ".join(parts) if lang == "en" else "，".join(parts)


def output_words(action: str | None, output: Any, lang: str) -> str:
    """What the action did, from its recorded output."""
    en = lang == "en"
    if not isinstance(output, dict):
        return "" if output is None else str(output)[:120]
    if action == "http" and "status" in output:
        elapsed = output.get("elapsed_ms")
        head = f"HTTP {output['status']}" + (f" in {elapsed:.0f} ms" if en and isinstance(elapsed, (int, float)) else
                                             f"，{elapsed:.0f} 毫秒" if isinstance(elapsed, (int, float)) else "")
        detail = json_words(output.get("json"), lang)
        return f"{head}; {detail}" if detail and en else f"{head}；{detail}" if detail else head
    if action == "notify" and "delivered" in output:
        total = output.get("delivered", 0) + output.get("failed", 0)
        tiers = output.get("tiers_paged", 1)
        by, via = output.get("acknowledged_by"), output.get("acknowledged_via")
        # The acknowledgement that stopped this page's escalation may be anyone's (the incident's first,
        # by someone this step did not page): it is told as what stopped the escalation, not as an answer.
        if en:
            text = f"delivered to {output['delivered']} of {total}" + (f", {tiers} tiers" if tiers > 1 else "")
            return text + (f"; escalation stopped: acknowledged by {by} via {via}" if by else "")
        text = f"送达 {output['delivered']}/{total} 人" + (f"，共 {tiers} 级" if tiers > 1 else "")
        return text + (f"；{by} 经{word(via, lang)}确认，停止升级" if by else "")
    if action == "wait_until" and "checks" in output:
        elapsed = output.get("elapsed_seconds", 0)
        if output.get("resolved_by_monitor"):
            return (f"the monitor reported the alert resolved after {output['checks']} checks in {elapsed:g} s"
                    if en else f"检查 {output['checks']} 次、{elapsed:g} 秒后，监控报告告警已恢复")
        return (f"condition held {output.get('consecutive')}× in a row after {output['checks']} checks in {elapsed:g} s"
                if en else f"检查 {output['checks']} 次、{elapsed:g} 秒后，条件连续 {output.get('consecutive')} 次成立")
    if action == "wait_until" and "samples" in output:  # observed before failing
        held = sum(1 for s in output["samples"] if s.get("holds"))
        return (f"{len(output['samples'])} checks recorded, the condition held in {held}" if en else
                f"记录了 {len(output['samples'])} 次检查，其中 {held} 次条件成立")
    if action == "set_status" and "status" in output:
        return f"status → {output['status']}" if en else f"状态 → {word(output['status'], lang)}"
    if action == "record" and "event_seq" in output:
        return f"noted at #{output['event_seq']}" if en else f"已记录于 #{output['event_seq']}"
    if action == "approval" and "decision" in output:
        decision = output["decision"]
        approver = i18n.approver(output.get("approver") or "—", output.get("approver_unverified"), lang)
        if decision == "proceeded-on-timeout":
            return "nobody decided in time; proceeded by policy" if en else "无人按时决定；按策略继续"
        return f"{decision} by {approver}" if en else f"{approver} {word(decision, lang)}"
    if "gap" in output and "required_agents" in output:  # staffing.required_agents
        level = output.get("service_level_now")
        level_text = (f"{level * 100:.1f} %" if en else f"{level * 100:.1f}%") if isinstance(level, (int, float)) \
            else "?"
        return (f"gap {output['gap']}: {output.get('agents_online')} online, {output['required_agents']} needed "
                f"(service level now {level_text})" if en else
                f"缺口 {output['gap']}：在线 {output.get('agents_online')}，需要 {output['required_agents']}"
                f"（当前服务水平 {level_text}）")
    if "status" in output and len(output) == 1:
        return str(output["status"])
    return json_words(output, lang)


def step_words(row: Any, lang: str) -> str:
    """One step's result in words: what it did, or why it failed or did not run."""
    en = lang == "en"
    if row.decision and row.decision.get("status") in ("approved", "rejected"):
        who = i18n.approver(row.decision.get("by") or "—", row.decision.get("unverified"), lang)
        comment = row.decision.get("comment")
        verb = row.decision["status"]
        text = f"{verb} by {who}" if en else f"{who} {word(verb, lang)}"
        return text + (f": {comment}" if comment and en else f"：{comment}" if comment else "") + \
            f" (#{row.decision['seq']})"
    if row.decision and row.decision.get("status") == "approval-timed-out":
        return ("nobody decided in time" if en else "无人按时决定") + f" (#{row.decision['seq']})"
    if row.status in ("succeeded", "reused"):
        return output_words(row.action, row.output, lang)
    if row.status == "skipped":
        return _skip_words(row.skip_reason, lang)
    if row.status == "failed":
        observed = output_words(row.action, row.output, lang) if row.output else ""
        return row.error + (f" — {observed}" if observed else "")
    if row.status == "started":
        return "started, no outcome recorded" if en else "已开始，没有记录结果"
    return ""


def _skip_words(reason: str, lang: str) -> str:
    if lang == "en":
        return reason
    if reason.startswith("condition"):
        return "条件不成立，跳过"
    if reason.startswith("run aborted"):
        return "运行已中止，跳过"
    return "跳过"


def event_words(event: Any, lang: str, titles: dict[str, str]) -> str:
    """One timeline event in words. English: the summary as recorded. Chinese: told from the event's fields."""
    if lang == "en":
        return event.summary + (f" ✗ {event.error}" if event.error and event.status == "failed" else "")
    data = event.data or {}
    step = titles.get(event.step_id or "", event.step_id or "")
    status = event.status
    if event.phase == "intent":
        return f"{step}：开始" + (f"（第 {event.attempt} 次尝试）" if event.attempt > 1 else "")
    if event.phase == "outcome" and status == "succeeded":
        detail = output_words(event.action, data.get("output"), lang)
        return f"{step}：完成" + (f" — {detail}" if detail else "")
    if event.phase == "outcome" and status == "failed":
        return f"{step}：失败 — {event.error or ''}"
    if status == "skipped":
        return f"{step}：{_skip_words(_reason_in(event.summary, ': skipped ('), lang)}"
    if status == "reused":
        return f"{step}：此前已完成，不重复执行"
    if status == "level-changed":  # records.incidents.change_level
        return f"{step + '：' if step else ''}响应级别 {data.get('from')} 级 → {data.get('to')} 级（{event.actor}）"
    if status == "command-handed-over":  # records.incidents.hand_over_command
        return f"指挥权由 {data.get('from') or '—'} 移交给 {data.get('to')}（{event.actor}）"
    if status == "escalation-stopped":  # tasks.notify: why the page's escalation stopped before its next tier
        why = {"acknowledged": f"{data.get('by')} 经{word(data.get('via'), lang)}确认",
               "monitor-resolved": "监控报告告警已恢复", "incident-resolved": "事件已解决",
               "incident-closed": "事件已关闭", "gate-decided": "审批已有结果"}.get(str(data.get("kind")), "")
        tier = data.get("next_tier")
        return f"{step}：{why + '，' if why else ''}停止升级" + (f"（第 {tier} 级未呼叫）" if tier else "")
    if isinstance(data.get("to"), str) and "from" in data \
            and status in ("triggered", "acknowledged", "mitigated", "resolved", "closed"):  # a status change
        implied = data.get("implied") or []
        text = f"状态 {word(data.get('from'), lang)} → {word(data['to'], lang)}"
        if implied:
            text += "（同时视为" + "、".join(word(s, lang) for s in implied) + "）"
        return text + f"（{event.actor}）"
    if event.action == "notify" and status in ("delivered", "failed", "sending"):
        tier = data.get("tier") or 1
        text = f"{step}：通知 {data.get('contact', '')} {word(status, lang)}"
        return text + (f"（第 {tier} 级）" if tier > 1 else "") + (f" — {event.error}" if event.error else "")
    if event.action == "record" and status == "info":
        if isinstance(data.get("message_zh"), str) and data["message_zh"].strip():  # tasks.note
            return f"{step}：{' '.join(data['message_zh'].split())}"
        figures = data.get("measurements")
        if isinstance(figures, dict):
            return f"{step}：已记录服务指标"
        return f"{step}：已记录事实"
    if event.action == "approval":
        who = i18n.approver(data["approver"], i18n.unverified(data), lang) if data.get("approver") else event.actor
        return {"awaiting-approval": f"{step}：等待审批（{data.get('timeout', '?')} 秒，超时{word(data.get('on_timeout'), lang)}）",
                "approved": f"{step}：{who} 批准" + (f"：{data.get('comment')}" if data.get("comment") else ""),
                "rejected": f"{step}：{who} 驳回" + (f"：{data.get('comment')}" if data.get("comment") else ""),
                "approval-escalated": f"{step}：无人决定，已升级",
                "approval-timed-out": f"{step}：超时无人决定（{word(data.get('decision'), lang)}）",
                }.get(status, f"{step}：{word(status, lang)}")
    simple = {
        "triggered": f"事件创建（{data.get('level', '')} 级，预案 {data.get('runbook', '')}）",
        "run-attached": "预案运行已关联",
        "acknowledged": f"{data.get('by', event.actor)} 经 {word(data.get('via'), lang)} 确认",
        "ack-repeated": f"{data.get('by', event.actor)} 再次确认（无变化）",
        "monitor-resolved": f"监控报告告警已恢复（{event.actor}）",
        "monitor-acknowledged": f"监控确认了告警（{event.actor}）",
        "monitor-late-resolve": f"事件关闭后，监控报告告警已恢复（{event.actor}）",
        "monitor-late-ack": f"事件关闭后，监控确认了告警（{event.actor}）",
        "escalating": f"{step}：无人确认，升级通知",
        "report-failed": "报告生成失败",
        "intent-refused": f"{step}：本次运行已失去对事件的控制，未执行",
    }
    if status in simple:
        return simple[status]
    if status.startswith("run-"):
        return f"预案运行{word(status.removeprefix('run-'), lang)}" + (f"：{event.error}" if event.error else "")
    return f"{step + '：' if step else ''}{word(status, lang)}（{event.actor}）"


def _reason_in(summary: str, marker: str) -> str:
    _, _, rest = (summary or "").partition(marker)
    return rest[:-1] if rest.endswith(")") else rest
