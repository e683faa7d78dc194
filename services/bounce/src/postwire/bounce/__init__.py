"""The bounce service: the event recorder (EVENTS → PostgreSQL), the bounce receiver (the MX of the bounce
domain: DSNs and complaints → events) and the bounce parser; the classifier is in ``postwire.bounces``."""
