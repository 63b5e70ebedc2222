"""A stand-in on-call person for drills: serves the acknowledgement links and clicks one.

A drill has nobody on call, so escalation would page tier after tier. The
responder serves notifications.acknowledgement.http on a free local port (and points
FIREBREAK_PUBLIC_URL at it, so the pages carry links to it), watches the demo
inbox, and acknowledges through the signed link in each page that reaches one of
`responders` — the same GET-then-POST a person's browser does. Each page, not each
incident: acknowledgement is per page, so a page sent after an earlier acknowledgement
escalates until somebody acknowledges it. A resolution notice asks for nothing and is
left alone, as a person would.
"""
from __future__ import annotations

import html
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field

import httpx
import uvicorn
from fastapi import FastAPI

from firebreak.settings import reload_settings
from notifications.acknowledgement.http import router

ACK_LINK = re.compile(r"https?://[^\s\"'<>]+/ack/[A-Za-z0-9._%~-]+")
#: Title marks of the `resolved` message event (notifications/templates): nothing to acknowledge.
RESOLVED_MARKS = ("[RESOLVED]", "【已解决】")


_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def form_fields(page: str) -> dict[str, str]:
    """The hidden fields of an acknowledgement page's form (its form token), as a browser submits them."""
    return {name: html.unescape(value) for name, value in _HIDDEN.findall(page)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AckServer:
    """The ack router alone, under uvicorn on 127.0.0.1 (what the intake service serves in production)."""

    def __init__(self) -> None:
        app = FastAPI(title="Firebreak acknowledgements")
        app.include_router(router)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self._previous_public_url: str | None = None

    def __enter__(self) -> AckServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the acknowledgement server did not start")
            time.sleep(0.02)
        self._previous_public_url = os.environ.get("FIREBREAK_PUBLIC_URL")
        os.environ["FIREBREAK_PUBLIC_URL"] = self.url
        reload_settings()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        if self._previous_public_url is None:
            os.environ.pop("FIREBREAK_PUBLIC_URL", None)
        else:
            os.environ["FIREBREAK_PUBLIC_URL"] = self._previous_public_url
        reload_settings()


@dataclass
class DrillResponder:
    """Acknowledges each page one of `responders` receives, through the ack link in it."""

    inbox_url: str
    responders: tuple[str, ...] = ("li-wei", "wu-qiang", "qian-li")
    delay: float = 0.3
    acknowledged: list[tuple[str, str]] = field(default_factory=list)  # (contact, incident id)
    _stop: threading.Event = field(default_factory=threading.Event)
    _done_links: set[str] = field(default_factory=set)

    def __enter__(self) -> DrillResponder:
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(0.1):
                try:
                    received = client.get(f"{self.inbox_url}/inbox").json()
                except httpx.HTTPError:
                    continue
                for item in received:
                    if item.get("recipient") not in self.responders:
                        continue
                    text = str((item.get("message") or {}).get("message", ""))
                    if any(mark in str((item.get("message") or {}).get("title", "")) for mark in RESOLVED_MARKS):
                        continue
                    match = ACK_LINK.search(text)
                    if match and match.group(0) not in self._done_links:
                        self._done_links.add(match.group(0))
                        time.sleep(self.delay)  # a person reads the page first
                        self._click(client, item["recipient"], match.group(0))

    def _click(self, client: httpx.Client, contact: str, link: str) -> None:
        page = client.get(link)
        if page.status_code != 200:
            return  # expired or refused: a real person would see the reason; nothing to record here
        shown = re.search(r"INC-\d{4}-\d+", page.text)
        again = shown is not None and (contact, shown.group(0)) in self.acknowledged  # a later page: no comment again
        # What the person's browser sends: the page's form (its form token, a comment; the name is the link's).
        answer = client.post(link, data={**form_fields(page.text), **({} if again else {"comment": "drill responder"})})
        if answer.status_code == 200:
            incident = re.search(r"INC-\d{4}-\d+", answer.text)
            self.acknowledged.append((contact, incident.group(0) if incident else "?"))
