"""What a bounce means, for the dispatcher (its own SMTP replies), the bounce receiver (report mails) and
the ``postwire bounce classify`` command.

Pure functions, no I/O: ``classify_reply`` maps an SMTP reply code, an RFC 3463 enhanced status and the
diagnostic text to a Sisimai reason and a hard/soft verdict, so a synchronous rejection and the DSN
reporting the same refusal get the same reason; ``parse_bounce`` reads a report mail (an RFC 3464 DSN,
an RFC 5965 feedback report, another MTA's own format or an auto-reply) into one result per recipient.
"""

from postwire.bounce_classifier.classify import Classification, classify_reply
from postwire.bounce_classifier.vocabulary import REASONS, bounded

__all__ = ["REASONS", "Classification", "bounded", "classify_reply"]
