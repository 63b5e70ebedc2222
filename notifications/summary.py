"""Who was told what, from the records: the pages of one incident, per contact, and its acknowledgements."""
from __future__ import annotations

from collections.abc import Iterator

from records.acknowledgements import list_acknowledgements
from records.incidents import notifications
from records.models import Notification


def pages(incident_id: str) -> list[Notification]:
    """One row per page: the channel that delivered it, else the last channel tried."""
    chosen: dict[str, Notification] = {}
    for row in notifications(incident_id):  # in the order they were tried
        key = row.page_key or row.idempotency_key
        if key not in chosen or chosen[key].status != "delivered":
            chosen[key] = row
    return list(chosen.values())


def who_was_told(incident_id: str) -> Iterator[str]:
    rows = pages(incident_id)
    delivered = sum(row.status == "delivered" for row in rows)
    yield f"messages that reached whom ({delivered} of {len(rows)} page(s) delivered; from the records):"
    for row in rows:
        tier = f" tier {row.tier}" if row.tier > 1 or row.cycle else ""
        acked = f"  acknowledged by {row.acknowledged_by}" if row.acknowledged_by else ""
        error = f"  ✗ {row.error}" if row.status != "delivered" and row.error else ""
        yield (f"  {row.status:<9} {row.contact:<13} {row.step_id}{tier} [{row.event or 'message'}, "
               f"{row.locale or '?'}] via {row.channel}: {row.title}{acked}{error}")
    acks = list_acknowledgements(incident_id)
    if not acks:
        yield "  nobody acknowledged"
    for ack in acks:
        note = "" if ack.effective else " (repeat; nothing changed)"
        comment = f": {ack.comment}" if ack.comment else ""
        yield f"  acknowledged by {ack.by} via {ack.via} at {ack.at:%H:%M:%S}Z{note}{comment}"
