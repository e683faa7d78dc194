"""The bounce receiver: the MX of the bounce domain; report mails (DSNs, complaints) → events."""
