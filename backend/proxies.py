"""Whose ``X-Forwarded-*`` headers count: only those of the proxies in
``USAGE_TRUSTED_PROXIES``.

Anyone can send ``X-Forwarded-For``. daphne's ``--proxy-headers`` believes it from every
peer, and takes its *first* address, which is the one the client wrote even behind a real
proxy (nginx's ``$proxy_add_x_forwarded_for`` appends to what the client sent). The client
address feeds the per-address rate limit and every log line, so a spoofed one evades the
one and poisons the other.

So: ``backend/serve.py`` passes ``--proxy-headers`` only when ``USAGE_TRUSTED_PROXIES`` is
set, and ``install()`` (called in each daphne process by ``backend/asgi.py``) replaces
daphne's header parser with ``forwarded_client``: a peer that is not a trusted proxy keeps
its own address whatever it sends; a trusted one is replaced by the right-most address of
``X-Forwarded-For`` that is not itself a trusted proxy (each proxy appends the peer it
saw, so that is the client as the outermost trusted proxy saw it). DRF's ``NUM_PROXIES``
is 0 (settings): the address is resolved here, once. This reads daphne's
``parse_x_forwarded_for`` (pinned in requirements.txt; tests/backend/test_proxies.py runs
a real daphne).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_installed = False


def network(text: str) -> Network:
    """An address (``10.0.0.1``) or a network (``10.0.0.0/8``); ValueError otherwise."""
    return ipaddress.ip_network(text.strip(), strict=False)


def trusted_networks() -> list[Network]:
    return [network(text) for text in settings.USAGE_TRUSTED_PROXIES]


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        parsed = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(parsed in candidate for candidate in trusted)


def forwarded_client(peer: str, forwarded_for: Iterable[str], trusted: Sequence[Network]) -> str:
    """The client's address: ``peer`` itself unless it is a trusted proxy; then the
    right-most address of the ``X-Forwarded-For`` values that is not a trusted proxy (the
    left-most when all are), as long as it is an address at all."""
    if not is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            return hop if _is_address(hop) else peer
    return hops[0] if hops else peer


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def parse_forwarded(
    headers: Any,
    address_header_name: str | None = "X-Forwarded-For",
    port_header_name: str | None = "X-Forwarded-Port",
    proto_header_name: str | None = "X-Forwarded-Proto",
    original_addr: list[Any] | None = None,
    original_scheme: str | None = None,
) -> tuple[list[Any] | None, str | None]:
    """daphne's ``parse_x_forwarded_for``, trusting only ``USAGE_TRUSTED_PROXIES``. The
    port of a forwarded client is 0, as daphne reports it without X-Forwarded-Port."""
    if not address_header_name or original_addr is None:
        return original_addr, original_scheme
    trusted = trusted_networks()
    peer = str(original_addr[0])
    if not is_trusted(peer, trusted):
        return original_addr, original_scheme
    values = _header_values(headers)
    client = forwarded_client(peer, values.get(address_header_name.lower().encode(), []), trusted)
    if client == peer:
        return original_addr, original_scheme
    scheme = original_scheme
    if proto_header_name and (proto := values.get(proto_header_name.lower().encode())):
        scheme = proto[-1].split(",")[-1].strip() or original_scheme
    return [client, 0], scheme


def _header_values(headers: Any) -> dict[bytes, list[str]]:
    """Lower-case name -> every value, from Twisted's ``Headers`` (HTTP) or a dict of
    bytes (daphne's WebSocket protocol)."""
    pairs = headers.getAllRawHeaders() if hasattr(headers, "getAllRawHeaders") else headers.items()
    values: dict[bytes, list[str]] = {}
    for name, raw in pairs:
        for value in raw if isinstance(raw, list | tuple) else [raw]:
            values.setdefault(bytes(name).lower(), []).append(bytes(value).decode("latin-1"))
    return values


def install() -> None:
    """Use ``parse_forwarded`` in daphne's HTTP and WebSocket protocols (idempotent)."""
    global _installed
    if _installed:
        return
    from daphne import http_protocol, ws_protocol

    http_protocol.parse_x_forwarded_for = parse_forwarded
    ws_protocol.parse_x_forwarded_for = parse_forwarded
    _installed = True
