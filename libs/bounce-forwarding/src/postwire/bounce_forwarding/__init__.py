"""Bounce forwarding: RFC 3464 reports mailed to an address an account chose (docs/bounces.md).

Two stages feed it, each with the events only it sees once: the bounce receiver (``bounced``,
``complained``, with the report mail) and the event recorder (``failed``, ``suppressed``, ``deferred``,
``delivered``, after they are stored). Both build a :class:`Forwarder` with :func:`forwarder_from`; a
report goes through the pipeline (INBOUND → dispatcher) like any mail.
"""

from postwire.bounce_forwarding.forwarder import Forwarder, ReportConfig
from postwire.bounce_forwarding.settings import ForwardingSettings, forwarder_from

__all__ = ["Forwarder", "ForwardingSettings", "ReportConfig", "forwarder_from"]
