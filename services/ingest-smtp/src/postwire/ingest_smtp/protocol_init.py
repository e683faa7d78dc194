"""Constructing aiosmtpd's SMTP protocol once per connection, without its per-connection introspection.

aiosmtpd 1.4's ``SMTP.__init__`` finds the AUTH mechanisms, handler hooks and ``smtp_*`` commands by
``inspect.getmembers``, ``dir`` and ``inspect.signature`` on every new connection, and formats a log line
about them; under a load of one message per connection that was a fifth of the ingest service's CPU.
Which names exist depends only on the protocol class and the handler's class, so :func:`init_protocol`
looks them up once per pair of classes and binds them per instance, setting the same attributes the
stock constructor sets for the arguments ingest uses. tests/test_protocol_init.py compares the two on
the pinned aiosmtpd, so an upgrade that changes the constructor shows up as a failing test, not a
half-initialised session.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from aiosmtpd.smtp import SMTP, AuthenticatorType, _AuthMechAttr

# The StreamReader's limit: how much one read may return, and half of what it buffers before it stops
# reading the socket. aiosmtpd uses its line length (1001), which makes a message's DATA a pause and a
# resume of the transport every 2 KB; command lines are still held to their own limits after reading
# (aiosmtpd checks every line against command_size_limits), so a larger limit changes no reply.
READ_LIMIT = 16 * 1024

# (AUTH mechanisms as (mechanism, attribute, found on the protocol), handler hooks as (hook, attribute),
# smtp_* commands as (command, attribute), the EHLO hook's form)
Names = tuple[tuple[tuple[str, str, bool], ...], tuple[tuple[str, str], ...], tuple[tuple[str, str], ...],
              str | None]
_known: dict[tuple[type, type], Names] = {}


def _names(protocol: type[SMTP], handler: type) -> Names:
    """What SMTP.__init__ computes, as names, once per pair of classes."""
    found = _known.get((protocol, handler))
    if found is None:
        found = _known[(protocol, handler)] = _look_up(protocol, handler)
    return found


def _look_up(protocol: type[SMTP], handler: type) -> Names:
    auth: dict[str, tuple[str, str, bool]] = {}
    for on_protocol, cls in ((True, protocol), (False, handler)):
        for name, member in inspect.getmembers(cls):
            if name.startswith("auth_"):
                mechanism = getattr(member, "__auth_mechanism_name__",
                                    name.replace("auth_", "").replace("__", "-"))
                auth[mechanism] = (mechanism, name, on_protocol)
    hooks = tuple((name.replace("handle_", ""), name) for name in dir(handler) if name.startswith("handle_"))
    commands = tuple((name.replace("smtp_", ""), name) for name in dir(protocol) if name.startswith("smtp_"))
    ehlo = dict(hooks).get("EHLO")
    form = None
    if ehlo is not None:
        params = len(inspect.signature(getattr(handler, ehlo)).parameters) - 1  # unbound: drop self
        form = {4: "old", 5: "new"}.get(params)
        if form is None:
            raise RuntimeError("Unsupported EHLO Hook")
    return tuple(auth.values()), hooks, commands, form


class BoundOnUse(Mapping[str, Any]):
    """``command → bound smtp_* method``, binding a method the first time it is looked up: a session uses
    five or six of aiosmtpd's thirty commands, and binding them all cost a few percent of a session."""

    def __init__(self, proto: SMTP, commands: tuple[tuple[str, str], ...]) -> None:
        self._proto = proto
        self._names = dict(commands)
        self._bound: dict[str, Any] = {}

    def __getitem__(self, command: str) -> Any:
        found = self._bound.get(command)
        if found is None:
            found = self._bound[command] = getattr(self._proto, self._names[command])
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def init_protocol(proto: SMTP, handler: Any, *, loop: asyncio.AbstractEventLoop, hostname: str, ident: str,
                  data_size_limit: int | None, tls_context: Any, auth_require_tls: bool, timeout: float,
                  authenticator: AuthenticatorType) -> None:
    """``SMTP.__init__(handler, ...)`` for the keyword arguments ingest passes, with cached names."""
    proto.__ident__ = ident
    proto.loop = loop
    asyncio.StreamReaderProtocol.__init__(
        proto, asyncio.StreamReader(loop=loop, limit=READ_LIMIT),
        client_connected_cb=proto._cb_client_connected, loop=loop)
    proto.event_handler = handler
    proto.data_size_limit = data_size_limit
    proto.enable_SMTPUTF8 = False
    proto._decode_data = False
    proto.hostname = hostname or socket.getfqdn()
    proto.tls_context = tls_context
    proto.require_starttls = tls_context and False  # as aiosmtpd: None without a TLS context
    proto._timeout_duration = timeout
    proto._timeout_handle = None
    proto._tls_handshake_okay = True
    proto._tls_protocol = None
    proto._original_transport = None
    proto.session = None
    proto.envelope = None
    proto.transport = None
    proto._handler_coroutine = None
    proto._auth_require_tls = auth_require_tls
    proto._proxy_timeout = None
    proto._authenticator = authenticator
    proto._auth_callback = None
    proto._auth_required = False
    auth, hooks, commands, ehlo_form = _names(type(proto), type(handler))
    proto._auth_methods = {mech: _AuthMechAttr(getattr(proto if on_proto else handler, attr), on_proto)
                           for mech, attr, on_proto in auth}
    proto._handle_hooks = {name: getattr(handler, attr) for name, attr in hooks}
    proto._ehlo_hook_ver = ehlo_form
    proto._smtp_methods = BoundOnUse(proto, commands)  # type: ignore[assignment]  # aiosmtpd: .get, .items
    proto._enforce_call_limit = False
