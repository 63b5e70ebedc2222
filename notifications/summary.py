"""Who was told what, from the records: the pages of one incident, per contact, and its acknowledgements."""
from __future__ import annotations

from collections.abc import Iterator

from records.acknowledgements import list_acknowledgements
from records.deliveries import DeliveryAttempt, attempts_of
from records.incidents import notifications
from records.models import Notification

#: How much of each failed try's error the one-line summary keeps.
ERROR_CHARS = 80


def pages(incident_id: str) -> list[Notification]:
    """One row per page: the channel that delivered it, else the last channel tried."""
    chosen: dict[str, Notification] = {}
    for row in notifications(incident_id):  # in the order they were tried
        key = row.page_key or row.idempotency_key
        if key not in chosen or chosen[key].status != "delivered":
            chosen[key] = row
    return list(chosen.values())


def describe_attempts(tries: list[DeliveryAttempt], lang: str = "en") -> str:
    """Every try of a page (or of one of its channels) in a few words: `attempts: 3 (2 failed: HTTP 500…)`,
    `attempts: 3 (1 interrupted, outcome unknown; 1 failed: HTTP 500)`; nothing for a page delivered at its
    first try."""
    # An interrupted try is not a failure: its message may have arrived (records.deliveries.INTERRUPTED).
    interrupted = sum(t.outcome == "interrupted" for t in tries)
    failed = [t for t in tries if t.outcome not in ("delivered", "interrupted")]
    if not failed and not interrupted and len(tries) <= 1:
        return ""
    errors = "; ".join(dict.fromkeys(_short(t.error or "—") for t in failed))
    if lang == "zh":
        parts = ([f"{interrupted} 次中断，结果未知"] if interrupted else []) + (
            [f"{len(failed)} 次失败：{errors}"] if failed else [])
        return f"尝试 {len(tries)} 次" + (f"（{'；'.join(parts)}）" if parts else "")
    # The interrupted count first: the failures' errors, joined by "; " too, end the line.
    parts = ([f"{interrupted} interrupted, outcome unknown"] if interrupted else []) + (
        [f"{len(failed)} failed: {errors}"] if failed else [])
    return f"attempts: {len(tries)}" + (f" ({'; '.join(parts)})" if parts else "")


def attempts_of_notification(tries: list[DeliveryAttempt], notification_id: int, lang: str = "en") -> str:
    """describe_attempts of one channel's summary row (a report's notification line)."""
    return describe_attempts([t for t in tries if t.notification_id == notification_id], lang)


def _short(error: str) -> str:
    error = " ".join(error.split())
    return error if len(error) <= ERROR_CHARS else error[:ERROR_CHARS - 1] + "…"


def who_was_told(incident_id: str) -> Iterator[str]:
    rows = pages(incident_id)
    tries: dict[str, list[DeliveryAttempt]] = {}
    for attempt in attempts_of(incident_id):  # every try, across the channels of each page
        tries.setdefault(attempt.page_key or str(attempt.notification_id), []).append(attempt)
    delivered = sum(row.status == "delivered" for row in rows)
    acks = list_acknowledgements(incident_id)
    yield f"messages that reached whom ({delivered} of {len(rows)} page(s) delivered; from the records):"
    for row in rows:
        tier = f" tier {row.tier}" if row.tier > 1 or row.cycle else ""
        # Only where this person acknowledged: the incident's acknowledgement is stamped on every page so far.
        mine = [a for a in acks if (a.contact_id == row.contact or (a.contact_id is None and a.by == row.contact))
                and (row.created_at is None or (a.last_at or a.at) >= row.created_at)]
        acked = f"  acknowledged by {mine[0].by} via {mine[0].via}" if mine else ""
        error = f"  ✗ {row.error}" if row.status != "delivered" and row.error else ""
        attempts = describe_attempts(tries.get(row.page_key or str(row.id), []))
        yield (f"  {row.status:<9} {row.contact:<13} {row.step_id}{tier} [{row.event or 'message'}, "
               f"{row.locale or '?'}] via {row.channel}: {row.title}{acked}{error}"
               + (f"  · {attempts}" if attempts else ""))
    if not acks:
        yield "  nobody acknowledged"
    for ack in acks:
        note = "" if ack.effective else " (repeat; nothing changed)"
        comment = f": {ack.comment}" if ack.comment else ""
        yield f"  acknowledged by {ack.by} via {ack.via} at {ack.at:%H:%M:%S}Z{note}{comment}"
