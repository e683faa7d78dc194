"""ingest-smtp: the SMTP submission server. A message is answered 250 only once JetStream holds it."""
