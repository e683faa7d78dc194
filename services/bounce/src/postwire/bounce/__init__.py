"""The bounce service: today the event recorder (EVENTS → PostgreSQL); DSN processing comes next."""
