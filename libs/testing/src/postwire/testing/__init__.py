"""Real servers for tests, on loopback and free ports: NATS, PostgreSQL, DNS, SMTP destinations.

Private to this repository (never published).
"""
