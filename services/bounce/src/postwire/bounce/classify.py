"""Compatibility alias: the classifier lives in the shared lib ``postwire.bounces.classify`` (the
dispatcher classifies its own SMTP replies with it too)."""

from postwire.bounces.classify import (
    HARD_REASONS,
    NOT_FAILURES,
    Classification,
    classify_reply,
    find_command,
    find_replycode,
    find_status,
    is_hardbounce,
)

__all__ = ["HARD_REASONS", "NOT_FAILURES", "Classification", "classify_reply", "find_command",
           "find_replycode", "find_status", "is_hardbounce"]
