"""The event recorder: EVENTS → PostgreSQL, suppressions from failures, and every stream's queue depth."""
