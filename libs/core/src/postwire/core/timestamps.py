"""The current time into a protobuf Timestamp, at an eighth of the cost of protobuf's own helpers.

``Timestamp.FromDatetime`` and ``GetCurrentTime`` are pure Python in every protobuf backend (4.6 µs:
a UTC time tuple and ``calendar.timegm``); every message is stamped several times on its way (accepted,
routed, each event)."""

from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp

_NANOS = 1_000_000_000


def stamp_now(ts: Timestamp) -> None:
    """Set ``ts`` to now (wall clock, nanoseconds)."""
    ts.seconds, ts.nanos = divmod(time.time_ns(), _NANOS)
