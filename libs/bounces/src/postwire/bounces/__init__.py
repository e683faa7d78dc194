"""Bounce classification shared by the dispatcher (its own SMTP replies) and the bounce service (DSNs).

Pure functions over strings, no I/O: ``classify_reply`` maps an SMTP reply code, an RFC 3463 enhanced
status and the diagnostic text to a Sisimai reason and a hard/soft verdict, so a synchronous rejection
and the DSN reporting the same refusal get the same reason.
"""

from postwire.bounces.classify import Classification, classify_reply
from postwire.bounces.vocabulary import REASONS, bounded

__all__ = ["REASONS", "Classification", "bounded", "classify_reply"]
