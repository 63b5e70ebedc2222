"""Send one message to one Apprise URL and say exactly what happened.

Apprise 1.x returns a single bool from Apprise.notify(); calling the plugin
object's own notify() gives a result per channel, and the warnings Apprise logs
on this thread give the reason for a failure.

`send_and_record` is one try of one channel of a page as the notify step makes it:
sent, then recorded as a row of its own (records.deliveries.DeliveryAttempt: when,
the try's number, outcome, the redacted error) in the same transaction that
updates the channel's summary row.
"""
from __future__ import annotations

import html
import logging
import threading
from dataclasses import dataclass

import apprise

from records import deliveries
from records.models import Notification, utcnow

_APPRISE_LOGGER = logging.getLogger("apprise")


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    channel: str  # redacted
    error: str | None = None


class _ThisThreadOnly(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


def redact(url: str) -> str:
    """The URL as Apprise prints it with privacy=True (passwords and tokens hidden),
    without its query string, which can carry custom headers or tokens."""
    server = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if server is None:
        scheme = url.split("://", 1)[0] if "://" in url else "?"
        return f"{scheme}://(unparseable)"
    return _without_query(server.url(privacy=True))


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]


def send(url: str, title: str, body: str, timeout: float = 10.0) -> DeliveryResult:
    server = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if server is None:
        return DeliveryResult(False, redact(url), "Apprise cannot use this URL (unknown scheme or malformed)")
    shown = _without_query(server.url(privacy=True))
    # Apprise's own connect/read timeouts bound a slow receiver.
    server.socket_connect_timeout = min(timeout, server.socket_connect_timeout or timeout)
    server.socket_read_timeout = min(timeout, server.socket_read_timeout or timeout)
    if server.notify_format == apprise.NotifyFormat.HTML:
        # Calling the plugin directly skips Apprise's own text→HTML conversion, and alert
        # text must never become markup in a mail client: escape it here. An email's
        # title is its Subject header, plain text, so only other HTML channels escape it.
        body = html.escape(body).replace("\n", "<br>\n")
        if not url.startswith(("mailto:", "mailtos:")):
            title = html.escape(title)
    capture = _ThisThreadOnly()
    _APPRISE_LOGGER.addHandler(capture)
    try:
        ok = bool(server.notify(body=body, title=title))
    except Exception as exc:  # noqa: BLE001  an Apprise plugin bug (any exception) must not take the step down with it
        return DeliveryResult(False, shown, f"{type(exc).__name__}: {exc}")
    finally:
        _APPRISE_LOGGER.removeHandler(capture)
    if ok:
        return DeliveryResult(True, shown)
    reason = "; ".join(dict.fromkeys(capture.messages)) or "Apprise reported failure"
    return DeliveryResult(False, shown, _scrub(reason, url, shown))


def send_and_record(url: str, title: str, body: str, *, key: str,
                    timeout: float = 10.0) -> tuple[DeliveryResult, Notification]:
    """One try: send over the channel whose summary row is `key` (claimed by
    records.deliveries.begin_attempt), then record this try and update the summary."""
    started = utcnow()
    result = send(url, title, body, timeout=timeout)
    row = deliveries.finish_attempt(key, delivered=result.delivered, error=result.error, started_at=started)
    return result, row


def _scrub(text: str, url: str, shown: str) -> str:
    # Apprise warnings can quote the full URL; keep only the redacted form, and no
    # value that came from a ${ENV} reference.
    from notifications.contacts import scrub

    return scrub(text.replace(url, shown))
