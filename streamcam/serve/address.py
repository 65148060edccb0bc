"""Whether ``--serve HOST:PORT`` can listen, asked before the model loads (no aiohttp, no torch needed)."""

from __future__ import annotations

import socket

from ..errors import InputError
from ..options import parse_address


def check_can_serve(address: str) -> None:
    """Resolve ``address``'s host and bind its port once, then let go: an unknown host, an address not of this
    machine or a busy port is one :class:`InputError` line now, not after seconds of loading a model.

    The server binds again when it starts (with the same ``SO_REUSEADDR`` as aiohttp's), so a port taken in
    between is still reported, by the same words.
    """
    host, port = parse_address(address)
    try:
        family, kind, protocol, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(where)
    except OSError as error:
        raise cannot_serve(host, port, error) from None


def cannot_serve(host: str, port: int, error: OSError) -> InputError:
    """The one line for an address that cannot be served, here and when the server binds."""
    return InputError(f"cannot serve on {host}:{port}: {error.strerror or error}")
