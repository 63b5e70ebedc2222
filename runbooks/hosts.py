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
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_PATTERN = re.compile(rf"^(?P<wild>\*\.)?(?P<host>{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::(?P<port>\d{{1,5}}))?$")
_UNSAFE = re.compile(r"[\s\\\x00-\x1f\x7f]")
DEFAULT_PORTS = {"http": 80, "https": 443}


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
