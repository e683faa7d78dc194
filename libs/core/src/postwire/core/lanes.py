"""Streams (lanes): every message is ``transactional`` or ``bulk``, and the two travel apart.

The stream is chosen at acceptance, first match wins:
1. the request's ``stream`` field (REST) or the message's ``X-Postwire-Stream`` header (SMTP, and raw
   MIME over the API; removed before the message is stored, like the other option headers);
2. the default of the SMTP login or the API key that sent it (``default_stream`` in its settings);
3. ``bulk`` for a message with several recipients or a ``List-Unsubscribe`` header, else
   ``transactional``.

It travels in the envelopes (``InboundMessage.stream``, ``OutboundMessage.stream``) and in the subjects:
each lane has its own INBOUND and OUTBOUND subjects and consumers (``postwire.core.topology``), and the
dispatcher's router and senders take from the lanes by a weighted, starvation-free choice
(``postwire.dispatcher.lanes``). An envelope without a stream (published before lanes existed, on the
subjects transactional mail still uses) is transactional.
"""

from __future__ import annotations

import re
from typing import Final, Literal

TRANSACTIONAL: Final = "transactional"
BULK: Final = "bulk"
STREAMS: Final = (TRANSACTIONAL, BULK)
Stream = Literal["transactional", "bulk"]

_HEADER_END: Final = re.compile(rb"\r?\n\r?\n")
_LIST_UNSUBSCRIBE: Final = re.compile(rb"(?im)^list-unsubscribe[ \t]*:")


def parse_stream(value: str) -> Stream | None:
    """``transactional`` or ``bulk`` (any case, spaces around allowed); None for anything else."""
    v = value.strip().lower()
    if v == TRANSACTIONAL:
        return TRANSACTIONAL
    if v == BULK:
        return BULK
    return None


def lane_of(stream: str) -> Stream:
    """The lane an envelope's ``stream`` field puts it in: empty (older envelopes) is transactional."""
    return BULK if stream == BULK else TRANSACTIONAL


def has_list_unsubscribe(raw: bytes) -> bool:
    """Whether the top-level header block of ``raw`` has a List-Unsubscribe field."""
    end = _HEADER_END.search(raw)
    head = raw if end is None else raw[: end.start()]
    return _LIST_UNSUBSCRIBE.search(head) is not None


def default_stream(recipients: int, list_unsubscribe: bool) -> Stream:
    """What a message not given a stream is: bulk when it goes to several recipients or carries
    List-Unsubscribe (a mailing), transactional otherwise (a receipt, a password reset)."""
    return BULK if recipients > 1 or list_unsubscribe else TRANSACTIONAL
