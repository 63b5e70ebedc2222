"""Which hosts a runbook's URL parameters may point at (`allowed_hosts:` in the runbook YAML).

A parameter declared `format: url` is the base of the URLs the runbook's steps request
(`url: "{{ params.service_url }}/failover"`). Whoever sets it, an alert, a route, an operator
or the default, its value must be a plain http(s) base URL whose host is listed:

    allowed_hosts:
      - 127.0.0.1            # a host name or IP address, any port
      - ops.example.com:8443 # only this port
      - "*.ops.example.com"  # any host under ops.example.com (not ops.example.com itself)
      - "[::1]"              # IPv6, in brackets

Nothing else: no credentials (`user@host`), no query or fragment, no whitespace, control
characters or backslashes, which parsers read differently. Core of the runbooks layer: no imports
from the project.

The same rule holds once more for each request, on its final URL (tasks.http): its scheme, host
and port must be allowed, or be exactly those the step's URL writes out in the runbook
(`written_base`), which runbooks.validate accepts as fixed by the runbook's author.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_PATTERN = re.compile(rf"^(?P<wild>\*\.)?(?P<host>{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::(?P<port>\d{{1,5}}))?$")
_UNSAFE = re.compile(r"[\s\\\x00-\x1f\x7f]")
DEFAULT_PORTS = {"http": 80, "https": 443}
#: A URL whose scheme, host and port are written out, up to the `/` that ends them.
WRITTEN_ORIGIN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#{}\s]+/")
#: Where a template starts in a step argument (runbooks.templating.is_template).
_TEMPLATE_START = re.compile(r"\{[{%]")

#: (scheme, host, port) of a request: the host lower-case and without brackets, the port filled in.
Origin = tuple[str, str, int]


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a usable allowed_hosts entry, or None."""
    match = _PATTERN.match(pattern.lower())
    if match is None:
        return (f"{pattern!r} is not a host name, IP address, [IPv6 address] or *.domain, "
                "optionally with :port")
    if match["port"] is not None and not 0 < int(match["port"]) < 65536:
        return f"{pattern!r}: port {match['port']} is out of range"
    return None


def _matches(pattern: str, host: str, port: int) -> bool:
    match = _PATTERN.match(pattern.lower())
    if match is None:
        return False
    if match["port"] is not None and int(match["port"]) != port:
        return False
    allowed = match["host"].strip("[]")
    if match["wild"]:
        return host.endswith("." + allowed)
    return host == allowed


def url_problem(url: str, allowed_hosts: list[str]) -> str | None:
    """Why `url` may not be used as this runbook's base URL, or None if it may."""
    if _UNSAFE.search(url):
        return "must not contain whitespace, control characters or backslashes"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in DEFAULT_PORTS:
        return "must be an http:// or https:// URL"
    if "@" in parts.netloc:
        return "must not carry credentials (user@host)"
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return "must be a base URL, without ?query or #fragment"
    host = (parts.hostname or "").lower()
    if not host:
        return "has no host"
    effective = port if port is not None else DEFAULT_PORTS[parts.scheme]
    if not any(_matches(pattern, host, effective) for pattern in allowed_hosts):
        listed = ", ".join(allowed_hosts) if allowed_hosts else "none"
        return f"host {host}:{effective} is not in the runbook's allowed_hosts ({listed})"
    return None


def written_base(url: str) -> str | None:
    """The part of a step's `url` that the runbook writes out and that names the scheme, host and port:
    the whole URL when it holds no template, else what comes before the first template when it ends
    with the `/` after the host (runbooks.validate); None when a template gives the host (a
    `format: url` parameter)."""
    start = _TEMPLATE_START.search(url)
    if start is None:
        return url
    written = url[:start.start()]
    return written if WRITTEN_ORIGIN.match(written) else None


def origin_problem(origin: Origin, allowed_hosts: list[str], written: Origin | None = None) -> str | None:
    """Why a request may not go to `origin` (as the HTTP client parsed the final URL), or None: it must
    be an http(s) origin whose host and port the runbook allows, or exactly the origin `written` out in
    the step's URL."""
    scheme, host, port = origin
    if scheme not in DEFAULT_PORTS:
        return f"scheme {scheme!r} is not http or https"
    if origin == written or any(_matches(pattern, host, port) for pattern in allowed_hosts):
        return None
    listed = ", ".join(allowed_hosts) if allowed_hosts else "none"
    shown = f"[{host}]" if ":" in host else host
    return f"host {shown}:{port} is not in the runbook's allowed_hosts ({listed})"
