"""Code every Postwire service shares: settings, logging, NATS topology, bodies, events, ops server."""
