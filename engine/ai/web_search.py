"""Which websites a business lets the assistant search: its ``ai_web_search_domains`` setting.

Off unless the business names its sites (``parlo tenant ai SLUG --web-search-domain ottica.it``),
typically its own website and maybe a supplier's. A site is a hostname and includes its
subdomains, as the providers' ``allowed_domains`` do. Hostnames only: a URL, a path, a port, a
wildcard or an IP address is refused with a readable reason before anything is stored, and a
stored value that is not a valid list (written by hand in the database) turns web search off
rather than reaching a provider.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from engine.errors import InvalidInput

SETTING = "ai_web_search_domains"
MAX_DOMAINS = 20
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SHOWN = 3  # problems named in one error; the rest are counted

log = logging.getLogger("parlo.ai")


def check_domain(value: object) -> str:
    """The hostname, lower-case and in ASCII (``münchen.de`` → ``xn--mnchen-3ya.de``), or InvalidInput."""
    if not isinstance(value, str):
        raise InvalidInput(f"{_kind(value)} is not a hostname")
    text = value.strip()
    shown = repr(text[:80] + ("…" if len(text) > 80 else ""))
    if not text:
        raise InvalidInput("an empty hostname")
    if "://" in text:
        try:
            host = urlsplit(text).hostname
        except ValueError:
            host = None
        hint = f" ({host})" if host else ""
        raise InvalidInput(f"{shown} is a URL: give the site's hostname only{hint}")
    if "*" in text:
        raise InvalidInput(f"{shown} has a wildcard: a hostname already includes its subdomains")
    if any(c in text for c in "/?#"):
        head = re.split(r"[/?#]", text)[0]
        raise InvalidInput(f"{shown} has a path: give the site's hostname only" + (f" ({head})" if head else ""))
    if any(c in text for c in ":@[]") or any(c.isspace() for c in text):
        raise InvalidInput(f"{shown} is not a hostname (no port, user or spaces)")
    host = text.rstrip(".").lower()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise InvalidInput(f"{shown} is an IP address: give the site's hostname")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidInput(f"{shown} is not a hostname") from None
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidInput(f"{shown} is not a hostname")
    if len(labels) < 2 or labels[-1].isdigit():
        raise InvalidInput(f"{shown} is not a website's hostname (like ottica.it)")
    return host


def check_domains(values: object) -> tuple[str, ...]:
    """A list of hostnames, checked, duplicates dropped (first kept); InvalidInput naming what is wrong."""
    if isinstance(values, str | bytes) or not isinstance(values, list | tuple):
        raise InvalidInput(f"expected a list of hostnames, not {_kind(values)}")
    if len(values) > MAX_DOMAINS:
        raise InvalidInput(f"at most {MAX_DOMAINS} sites, not {len(values)}")
    hosts: list[str] = []
    problems: list[str] = []
    for value in values:
        try:
            host = check_domain(value)
        except InvalidInput as exc:
            problems.append(str(exc))
            continue
        if host not in hosts:
            hosts.append(host)
    if problems:
        more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise InvalidInput("; ".join(problems[:_SHOWN]) + more)
    return tuple(hosts)


def tenant_domains(settings: Mapping[str, Any], tenant_id: uuid.UUID | None = None) -> tuple[str, ...]:
    """The sites a tenant's settings allow; none (web search off) when unset or not valid."""
    stored = settings.get(SETTING)
    if not stored:
        return ()
    try:
        return check_domains(stored)
    except InvalidInput as exc:
        log.warning("web search off: the tenant's stored sites are not valid",
                    extra={"tenant_id": str(tenant_id) if tenant_id else None, "reason": str(exc)[:300]})
        return ()


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    name = {"str": "string", "int": "number", "float": "number", "dict": "mapping"}.get(type(value).__name__,
                                                                                       type(value).__name__)
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
