"""classify_reply: the pure SMTP-reply → reason mapping shared by the bounce parser and the dispatcher."""

from __future__ import annotations

import pytest

from postwire.bounce_classifier.classify import (
    Classification,
    classify_reply,
    find_command,
    find_replycode,
    find_status,
)


@pytest.mark.parametrize(
    ("code", "status", "text", "reason", "hard"),
    [
        (550, "5.1.1", "<a@example.org>... User unknown", "userunknown", True),
        (550, None, "550 5.1.1 <a@example.org>: Recipient address rejected: User unknown", "userunknown",
         True),
        (552, "5.2.2", "Mailbox full", "mailboxfull", False),
        (452, "4.2.2", "The email account that you tried to reach is over quota.", "mailboxfull",
         False),
        (550, "5.1.2", "Host or domain name not found", "hostunknown", True),
        (None, "5.4.4", "Unrouteable address", "hostunknown", True),
        (None, "4.4.7", "Delivery time expired", "expired", False),
        (554, "5.7.1", "Client host [192.0.2.1] blocked using zen.spamhaus.org", "blocked",
         False),
        (550, "5.7.1", "Message rejected as spam by Content Filtering", "spamdetected", False),
        (554, "5.7.1", "Relay access denied", "norelaying", False),
        (550, "5.7.26", "Unauthenticated email from example.com is not accepted due to DMARC policy",
         "authfailure", False),
        (550, "5.7.25", "The IP address sending this message does not have a PTR record", "requireptr",
         False),
        (554, "5.7.9", "Message not accepted for policy reasons", "policyviolation", False),
        (550, "5.2.1", "The email account that you tried to reach is disabled.", "suspend", False),
        (552, "5.3.4", "Message size exceeds fixed limit", "mesgtoobig", False),
        (552, "5.2.3", "Message length exceeds administrative limit", "exceedlimit", False),
        (421, "4.7.0", "Too many concurrent SMTP connections from this IP", "toomanyconn", False),
        (450, "4.7.1", "Sending rate limit exceeded, slow down", "speeding", False),
        (554, "5.7.0", "Virus detected: Eicar-Test-Signature", "virusdetected", False),
        (501, "5.1.8", "Sender address rejected: Domain not found", "rejected", False),
        (551, "5.1.6", "User has moved; please try <b@example.net>", "hasmoved", True),
        (550, "5.7.13", "Disabled recipient address", "suspend", False),
        (530, "5.7.0", "Must issue a STARTTLS command first", "failedstarttls", False),
        (550, "5.7.1", "This message is not RFC 5322 compliant: multiple Subject headers", "notcompliantrfc",
         False),
        (556, "5.1.10", "Recipient address has null MX", "notaccept", True),
        (None, "4.4.1", "connect to mx.example.org[192.0.2.1]:25: Connection timed out", "expired", False),
        (451, "4.4.0", "DNS lookup failure: host not found, try again", "networkerror", False),
        (452, "4.3.1", "Insufficient system storage", "systemfull", False),
        (None, None, "", "onhold", False),
    ],
)
def test_reasons(code: int | None, status: str | None, text: str, reason: str, hard: bool) -> None:
    got = classify_reply(code, status, text)
    assert (got.reason, got.hardbounce) == (reason, hard), got


def test_returns_classification_with_code_and_status_from_text() -> None:
    got = classify_reply(None, None, "host mx.example.org said: 550 5.1.1 <a@example.org>: unknown user")
    assert got == Classification("userunknown", True, "5.1.1", 550)


def test_delivered_status_is_not_a_failure() -> None:
    got = classify_reply(250, "2.0.0", "Ok: queued as 12345")
    assert (got.reason, got.hardbounce) == ("delivered", False)


def test_notaccept_is_soft_when_temporary() -> None:
    assert classify_reply(None, "5.1.10", "null MX").hardbounce is True
    assert classify_reply(450, None, "This domain does not accept mail").hardbounce is False


def test_user_unknown_after_data_is_a_filter_unless_the_status_says_5_1_1() -> None:
    assert classify_reply(550, None, "550 Unknown user", command="DATA").reason == "filtered"
    assert classify_reply(550, "5.1.1", "550 Unknown user", command="DATA").reason == "userunknown"
    assert classify_reply(550, None, "550 Unknown user", command="RCPT").reason == "userunknown"


def test_precise_status_wins_over_generic_words() -> None:
    # "rejected" alone would say nothing; 5.1.1 says the mailbox does not exist
    assert classify_reply(550, "5.1.1", "Recipient rejected").reason == "userunknown"


def test_missing_status_is_synthesised_with_the_right_class() -> None:
    assert classify_reply(None, None, "mailbox is full, try again later").status == "4.2.2"
    got = classify_reply(550, None, "no such user")
    assert got.status is not None and got.status.startswith("5.")


def test_helpers() -> None:
    assert find_status("said: 550-5.7.1 [1.2.3.4] blocked") == "5.7.1"
    assert find_status("5.1.0 - Unknown address error 550-'5.7.1 <x@y.z>... Access denied") == "5.7.1"
    assert find_status("no code at 192.0.2.1") is None
    assert find_replycode("host mx[192.0.2.1] said: 452 4.2.2 full") == 452
    assert find_command("said: 550 User unknown (in reply to end of DATA command)") == "DATA"
    assert find_command("SMTP error from remote mail server after RCPT TO:<a@b.c>:") == "RCPT"
    assert find_command(">>> MAIL FROM:<a@b.c>\n<<< 550 denied") == "MAIL"


@pytest.mark.parametrize(
    ("code", "status", "text", "reason"),
    [
        # provider error-code tables (providers.py)
        (550, "5.5.0", "550 5.5.0 Adresse destinataire invalide. Invalid recipient. LPN007_416",
         "userunknown"),
        (421, None, "421 mwinf5c77 ME Service refuse. Veuillez essayer plus tard. OFR_999 [999]", "blocked"),
        (550, "5.1.0", "550 5.1.0 <a@example.com> sender rejected. AUP#In-1310", "toomanyconn"),
        (550, "5.1.0", "550 5.1.0 <a@example.com> sender rejected. Refer to Error Codes. AUP#CDRBL",
         "blocked"),
        (550, "5.1.1", "550 5.1.1 RCP-P2 http://postmaster.facebook.com/response_codes#rcp Refused due to "
         "recipient preferences", "filtered"),
        (550, "5.4.312", "550 5.4.312 Message expired, DNS query failed", "networkerror"),
        (550, "5.0.0", "550 : User unknown", "filtered"),  # au/KDDI reception filter: no address named
        (550, "5.0.0", "550 <a@ezweb.ne.jp>: User unknown", "userunknown"),
        (554, None, "554 Host network not allowed - https://community.mimecast.com/docs/DOC-1369#554",
         "policyviolation"),
        (554, None, "554 email rejected due to security policies - MCSpamSignature.sa.2.2", "virusdetected"),
        (None, None, "We're writing to let you know that the group you tried to contact (x) may not exist. "
         "https://groups.google.com/support/", "rejected"),
        # phrase rules
        (500, None, "500 Remote server does not support TLS (state 6).", "failedstarttls"),
        (550, None, "550 domain [example.com] mismatches client ip 192.0.2.225.", "requireptr"),
        (550, None, "550-REJECTED - Blacklisted URL in message. See http://lookup.uribl.com.",
         "spamdetected"),
        (550, "5.7.0", "550 5.7.0 <a@example.jp>... Please use the smtp server of your ISP.", "blocked"),
        (552, "5.7.0", "552-5.7.0 This message was blocked because its content presents a potential "
         "security issue.", "policyviolation"),
        (554, "5.5.0", "554 The mail could not be delivered to the recipient because the domain is not "
         "reachable. Please check the domain and try again", "hostunknown"),
        (None, "5.4.4", "Name service error for name=example.org type=MX: Malformed or unexpected name "
         "server reply", "networkerror"),
        (None, "4.4.3", "Unable to contact LDAP server. (#4.4.3)I'm not going to try again; this\n"
         "message has been in the queue too long.", "systemerror"),
        (None, None, "pipe to |/usr/local/bin/filter a@example.com generated by a@example.com",
         "mailererror"),
        (550, "5.7.9", "550 5.7.9 Rejected", "securityerror"),  # RFC 4954: mechanism too weak
    ],
)
def test_provider_tables_and_phrases(code: int | None, status: str | None, text: str, reason: str) -> None:
    assert classify_reply(code, status, text).reason == reason


def test_the_failing_command_decides_what_a_generic_phrase_means() -> None:
    # refused at MAIL FROM: the sender's address or domain does not exist
    got = classify_reply(553, "5.1.0", "553 5.1.0 neko.example.com does not exist", command="MAIL")
    assert (got.reason, got.hardbounce) == ("rejected", False)
    # refused right after connecting, for no stated reason: the client was judged
    assert classify_reply(554, None, "554 You've reached your daily relay quota", command="CONN").reason \
        == "blocked"
    # "user unknown" under a status that says the mailbox exists, not at RCPT: a recipient-side filter
    assert classify_reply(550, "5.2.1", "550 5.2.1 <a@example.jp>... User Unknown").reason == "filtered"
    assert classify_reply(550, "5.2.1", "550 5.2.1 <a@example.jp>... User Unknown",
                          command="RCPT").reason == "userunknown"


def test_command_wordings_of_more_mtas() -> None:
    assert find_command("kijitora@example.com\n-------server message\n550 unknown user\n"
                        "-------SMTP command DATA") == "DATA"
    assert find_command("Technical details:\nSMTP:RCPT host 192.0.2.8: 553 5.3.0 No such user") == "RCPT"
    assert find_command("<a@example.jp>: 192.0.2.153 does not like recipient.") == "RCPT"
    # m-FILTER puts the command on the line below its heading
    assert find_command("-------server message\n550 unknown user <a@example.com>\n\n-------SMTP command\n"
                        "DATA\n") == "DATA"


def test_a_sendmail_transcript_that_starts_with_the_failure_was_refused_at_the_greeting() -> None:
    # Sendmail prints ">>> COMMAND" before each reply; a "<<<" reply with none before it is the greeting
    transcript = ("----- Transcript of session follows -----\n... while talking to mx.example.org.:\n"
                  "<<< 554 mx.example.org - A problem occurred. (BL)\n554 5.0.0 Service unavailable")
    assert find_command(transcript) == "CONN"
    assert classify_reply(None, "5.5.0", transcript, command="CONN").reason == "blocked"
    after_rcpt = ("... while talking to mx.example.org.:\n>>> RCPT To:<a@example.org>\n"
                  "<<< 550 5.1.1 User unknown")
    assert find_command(after_rcpt) == "RCPT"


def test_transcript_prefers_the_failure_over_earlier_successes() -> None:
    text = "Out: 250 2.1.5 Ok In: DATA Out: 354 End data Out: 451 4.3.0 Error: queue file write error"
    assert find_status(text) == "4.3.0"
    assert find_replycode(text) == 451
    got = classify_reply(None, None, text)
    assert got.reason != "delivered" and got.status == "4.3.0"


def test_replycode_at_line_end_only_after_a_reply_introduction() -> None:
    assert find_replycode("host mx.example.org said: 550\n    <a@example.org>: User unknown") == 550
    assert find_replycode("<<< 421\n<a@example.org>... Deferred: 421\n") == 421
    assert find_replycode("Size (in bytes): 222\nNumber of lines: 2\n") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("malformed address: <b@example.net> may not follow a@example.com", "syntaxerror"),
        ("Sorry, you are sending to/from an address that has been blacklisted", "rejected"),
        ("Warning: message still undelivered after 4 hours", "expired"),
        ("Unable to deliver message to <a@example.jp> (and other recipients in the same domain).",
         "userunknown"),
    ],
)
def test_wordings_added_for_the_corpus_misses(text: str, reason: str) -> None:
    assert classify_reply(None, None, text).reason == reason


def test_user_unknown_needs_the_rcpt_stage_or_an_x11_status() -> None:
    """Sisimai's rule: a missing mailbox shows at RCPT or under X.1.1; the same words with neither may be a
    filter's (the mailbox may exist), so they are filtered and soft, not a reason to suppress."""
    text = "550 No such user here"

    def verdict(status: str | None, command: str | None) -> tuple[str, bool]:
        got = classify_reply(None, status, text, command=command)
        return got.reason, got.hardbounce

    assert verdict(None, "RCPT") == ("userunknown", True)
    assert verdict("5.1.1", None) == ("userunknown", True)
    assert verdict(None, None) == ("filtered", False)
    assert verdict(None, "DATA") == ("filtered", False)
    # a stage named in the text counts, across a wrapped line
    assert classify_reply(None, None, text + " (in reply to\n    RCPT TO command)").reason == "userunknown"


def test_a_delivery_aborted_after_a_time_limit_expired() -> None:
    # the MTA gave up when its queue time ran out: expired, and final (class 5), not "nothing known"
    got = classify_reply(None, None, "Delivery to the following recipients was aborted after 5.0 hour(s)")
    assert (got.reason, got.status, got.hardbounce) == ("expired", "5.4.7", False)


@pytest.mark.parametrize(
    ("text", "command"),
    [  # qmail-remote names the stage in its own words (qmail-remote.c)
        ("Connected to 192.0.2.1 but greeting failed.\nRemote host said: 554 go away", "CONN"),
        ("Connected to 192.0.2.1 but my name was rejected.\nRemote host said: 501 bad HELO", "HELO"),
        ("Connected to 192.0.2.1 but sender was rejected.\nRemote host said: 553 no such user", "MAIL"),
        ("192.0.2.1 does not like recipient.\nRemote host said: 550 no such user", "RCPT"),
        ("192.0.2.1 failed on DATA command.\nRemote host said: 554 no valid recipients", "DATA"),
        ("192.0.2.1 failed after I sent the message.\nRemote host said: 554 rejected", "DATA"),
    ],
)
def test_qmail_remote_stages(text: str, command: str) -> None:
    assert find_command(text) == command


def test_a_user_unknown_at_the_sender_stage_is_the_sender_refused() -> None:
    text = "Connected to 192.0.2.1 but sender was rejected.\nRemote host said: 553 sorry, no such user"
    assert classify_reply(None, None, text).reason == "rejected"


def test_exims_pipelined_commands_name_their_stage() -> None:
    text = "SMTP error from remote mail server after pipelined RCPT TO:<a@example.org>:\n550 No such user"
    assert find_command(text) == "RCPT"
    assert classify_reply(None, None, text).reason == "userunknown"
