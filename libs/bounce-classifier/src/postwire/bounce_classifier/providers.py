"""Provider error codes and provider-specific wordings → reason, as data.

Large mailbox providers and filtering services attach their own error code to a rejection
("OFR_416", "AUP#In-1310", "RCP-P2") and publish what each one means. Such a code names the
condition more precisely than the generic SMTP reply and enhanced status around it (Orange answers
"550 5.5.0 … Invalid recipient" at DATA, Spectrum says "sender rejected" for a connection limit),
so `classify_reply` consults these tables first.

Every family below is recognised by the code's own shape in the diagnostic text, not by the host
name, so the tables also work for the dispatcher's synchronous replies, which carry no DSN fields (two
carrier gateways, au's and Verizon's, are known by the domain of the address their wording names).
Each family notes where its meanings come from; the reasons are Sisimai's vocabulary
(../shared/corpus/bounces/REASONS.md). Sisimai's rhost modules (BSD-2-Clause) were used as a
cross-check of the readings.

Every entry is tagged with its provider, so `without_providers` can switch a provider's knowledge off:
the cross-validation (bench/bounce_crossval.py) scores each provider's mails without it, which is how
the classifier fares on a provider nobody wrote a table for.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

_DISABLED: ContextVar[frozenset[str]] = ContextVar("postwire_bounce_disabled_providers", default=frozenset())


@contextmanager
def without_providers(names: Iterable[str]) -> Iterator[None]:
    """Classify as if the named providers' codes and wordings were unknown (for cross-validation)."""
    token = _DISABLED.set(_DISABLED.get() | frozenset(names))
    try:
        yield
    finally:
        _DISABLED.reset(token)


def provider_enabled(name: str) -> bool:
    """Whether the knowledge tagged `name` is in use (always, outside `without_providers`)."""
    return name not in _DISABLED.get()

# --- Orange / Wanadoo / La Poste (France Télécom): "OFR_416", "OFR004_405 [405]", "LPN007_416",
# "LPNAAA_101", "OUK_513". The last three digits are the error number. Sources: Orange's postmaster
# error list as republished by postmastery.com ("orange-postmaster-smtp-error-codes-ofr") and
# smtpfieldmanual.com/provider/orange; La Poste uses the same numbering with the LPN prefix.
ORANGE_CODES: dict[str, str] = {
    "101": "blocked",          # IP listed on a DNSBL (Spamhaus), "emails … ont ete bloques"
    "102": "blocked",          # "Adresse IP source bloquee pour incident de spam" / Cloudmark CSI
    "103": "blocked",          # "Service refuse" for the connecting IP
    "104": "toomanyconn",      # "Trop de connexions, veuillez verifier votre configuration"
    "108": "blocked",          # "service refused, please try later" (IP-level refusal)
    "305": "securityerror",    # "Code d'authentification invalide"
    "401": "authfailure",      # "SPF: … is not allowed to send mail"
    "402": "securityerror",    # "Authentification requise"
    "403": "rejected",         # "Emetteur invalide. Invalid Sender."
    "405": "rejected",         # "Emetteur invalide. Invalid Sender." (at MAIL FROM)
    "415": "rejected",         # "Emetteur invalide. Invalid Sender."
    "416": "userunknown",      # "Adresse d'au moins un destinataire invalide. Invalid recipient."
    "417": "mailboxfull",      # "Boite du destinataire pleine. Recipient overquota."
    "420": "suspend",          # "Boite du destinataire archivee. Archived recipient."
    "421": "rejected",         # "Mail from not owned by user."
    "426": "suspend",          # "Le compte du destinataire est bloque."
    "505": "systemerror",      # "Service refuse. Veuillez essayer plus tard." at end of DATA
    "506": "spamdetected",     # "Mail rejete. Mail rejected." (content scored as spam)
    "510": "blocked",          # "Service refuse" at end of DATA for a listed sender IP
    "514": "mesgtoobig",       # "Taille limite du message atteinte"
    "517": "authfailure",      # "Message refuse, verification DMARC en echec"
    "630": "policyviolation",  # "Client host rejected" by local policy
    "999": "blocked",          # "Service refuse. Veuillez essayer plus tard." (IP refused)
}
_ORANGE_RE = re.compile(r"\b(?:ofr|lpn|lpnaaa|ouk)[0-9a-z]{0,3}[_-](\d{3})\b")

# --- Spectrum / Charter: "AUP#In-1310", "AUP#O-1000": four digits, ranges published at
# spectrum.net/support/internet/understanding-email-error-codes (incoming "I", outgoing "O").
SPECTRUM_RANGES: Sequence[tuple[int, int, str]] = (
    (1000, 1000, "blocked"),           # IP blocked for suspicious activity
    (1010, 1080, "rejected"),          # the sending account is blocked or limited
    (1090, 1090, "systemerror"),       # the mail cannot be processed now
    (1100, 1150, "requireptr"),        # no full-circle (forward-confirmed reverse) DNS
    (1160, 1190, "policyviolation"),   # against the domain's security policies
    (1200, 1250, "blocked"),           # listed by Cloudmark CSI or Spamhaus
    (1260, 1260, "networkerror"),      # IPv6 not accepted
    (1300, 1340, "toomanyconn"),       # concurrent / total connection limits
    (1350, 1490, "speeding"),          # message / recipient volume limits
    (1500, 1520, "rejected"),          # sending as an address the account does not own
    (1530, 1530, "mesgtoobig"),        # larger than 20 MB
    (1540, 1580, "speeding"),          # too many messages or recipients per session / period
)
_SPECTRUM_RE = re.compile(r"aup#(?:in?|o(?:ut)?)?-?(\d{4})\b")

# --- Cox: "AUP#CXBL", "AUP#CDRBL", "AUP#IPBL0001". Source: cox.com/residential/support/email-error-codes
# (Cox postmaster "Error Codes" section).
COX_CODES: dict[str, str] = {
    "cxbl": "blocked",          # sending IP blocked for spam-like behaviour
    "cdrbl": "blocked",         # sending IP temporarily blocked (dynamic reputation block list)
    "cxdns": "requireptr",      # reverse DNS of the connecting IP fails
    "cxsndr": "authfailure",    # SPF/DomainKeys/DKIM of the sender domain failed
    "cxsmtp": "rejected",       # SMTP protocol violation: sender cannot be verified
    "cxcnct": "toomanyconn",    # too many concurrent connections per IP
    "cxmxrt": "speeding",       # too many recipients / messages: wait before sending more
    "cxthrt": "securityerror",  # sending limited: suspicious account activity
    "cxmj": "securityerror",    # sending blocked: suspicious activity on the primary account
}
_COX_RE = re.compile(r"aup#([a-z]{2,6})(\d*)\b")

# --- Facebook (postmaster.facebook.com/response_codes): "RCP-P2" and friends.
FACEBOOK_CODES: dict[str, str] = {
    "rcp-p1": "userunknown",   # the recipient address does not exist
    "rcp-p2": "filtered",      # the recipient's preferences prevent delivery
    "rcp-p3": "filtered",      # the recipient's privacy settings block the sender
}
_FACEBOOK_RE = re.compile(r"\b(rcp-[pt]\d)\b")

# --- Microsoft Exchange Online / Office 365 NDR codes (learn.microsoft.com "Email non-delivery reports
# and SMTP errors in Exchange Online"): 5.4.3xx are routing / DNS failures, reported with a generic
# "Message expired" prefix when the retries ran out.
MICROSOFT_CODES: dict[str, str] = {
    "4.4.310": "hostunknown",   # DNS: the recipient domain does not exist (temporary)
    "5.4.310": "hostunknown",   # DNS domain does not exist
    "4.4.312": "networkerror",  # DNS query failed
    "5.4.312": "networkerror",  # DNS query failed
    "4.4.316": "expired",       # connection refused until the message expired
    "5.4.316": "expired",
}
# "550 5.4.1 Recipient address rejected: Access denied": Exchange Online's directory-based edge
# blocking, documented as "the recipient address does not exist in the organisation", at any stage. The
# same words from Postfix (an access-table REJECT, no 5.4.1) are read by rules.py and the stage rules.
_MICROSOFT_DBEB = re.compile(r"5\.4\.1\b.{0,120}recipient address(?:es)? rejected ?: access denied")
_MICROSOFT_RE = re.compile(r"(?<![\d.])([45]\.4\.31\d)(?![\d.])")

# --- Provider wordings without a code. Each pattern runs on lowercased, whitespace-collapsed text.
PROVIDER_PHRASES: Sequence[tuple[str, str, str]] = (
    # au / KDDI (ezweb.ne.jp, au.com): a recipient's reception filter answers "550 : User unknown" with
    # an empty address; an address that really does not exist is named ("550 <x@ezweb.ne.jp>: User
    # unknown"). Source: au support "mail/trouble/01" (迷惑メールフィルター) pages.
    ("kddi", r"(?<![\w.])550 : user unknown", "filtered"),
    ("kddi", r"(?<![\w.])550:? <[^<>@\s]+@(?:ezweb\.ne\.jp|au\.com)>: user unknown", "userunknown"),
    # Google's notice for a Google-hosted address that does not exist: "Your message wasn't delivered to
    # x because the address couldn't be found. Check for typos or unnecessary spaces and try again."
    # (support.google.com/mail/answer/7720). Its wording for a remote server's refusal differs ("…
    # couldn't be found, or is unable to receive mail. The response from the remote server was: …").
    ("gmail", r"because the address couldn't be found\. check for typos", "userunknown"),
    # Exchange 2000/2003's Internet Mail Service NDR: "The recipient name is not recognized …
    # MSEXCH:IMS:… (000C05A6) Unknown Recipient": its directory has no such recipient.
    ("exchange2003", r"msexch:ims:.{0,120}\(000c05a6\) unknown recipient", "userunknown"),
    # Ipswitch IMail's NDR for a local delivery: "Unknown user: x@y", "Invalid final delivery userid: x@y".
    ("imail", r"(?:^|\s)(?:unknown user|invalid final delivery userid): \S+@", "userunknown"),
    # Verizon Wireless's MMS gateway (vtext.com, vzwpix.com): "No valid recipients for this MM" for a
    # number that has no account, and "550 - Requested action not taken: no such user here" from vtext.
    ("verizon", r"no valid recipients for this mm\b", "userunknown"),
    ("verizon", r"rcpt to: \S+@vtext\.com\b", "userunknown"),
    # Mimecast (community.mimecast.com "Mimecast SMTP Error Codes").
    ("mimecast", r"host network,? not allowed", "policyviolation"),        # geographic restriction
    ("mimecast", r"anti-spoofing policy", "policyviolation"),
    ("mimecast", r"mcspamsignature|rejected due to security policies", "virusdetected"),  # AV/signature
    ("mimecast", r"(?:spf|dkim|dmarc) sender invalid - envelope rejected", "authfailure"),
    ("mimecast", r"local ct ip reputation", "badreputation"),
    ("mimecast", r"envelope blocked - user (?:domain )?entry", "rejected"),   # personal block list
    ("mimecast", r"this route requires (?:encryption|tls|high-strength)", "failedstarttls"),
    # Trend Micro InterScan Messaging Security Suite: its notice for a recipient the next hop refused
    # at RCPT names the address and its domain only ("Unable to deliver message to <x> (and other
    # recipients in the same domain)"); a refused connection or content reads differently.
    ("interscan", r"unable to deliver message to \S+ \(and other recipients in the same domain\)",
     "userunknown"),
    # Google Groups: a group that bounces posts its spam classifier rejected (instead of moderating).
    ("googlegroups", r"rejected due to spam classification", "spamdetected"),
    # Google Groups: a post the group refused (no such group, or the sender may not post). The
    # notice is localised (ja, ar, de, …), but always links the Groups help centre.
    ("googlegroups", r"groups\.google\.com/support", "rejected"),
    # Gmail "Send mail as" through a misconfigured external SMTP server: the sender's setup is wrong.
    ("gmail", r"customfromdenied", "rejected"),
    # Outlook.com: the sending domain's records do not list the connecting IP ("domain [x] mismatches
    # client ip"): the client's name does not check out, a reverse-DNS-style identity failure.
    ("microsoft", r"mismatches client ip", "requireptr"),
    # Exchange Online NDR reference: "5.2.2 ... SubmissionQuotaExceededException" is the *sender's*
    # mailbox over its sending limit (under the status 5.2.2 that otherwise means a full mailbox), and
    # "RESOLVER.RST.NotAuthorized" / "AuthRequired" / "SenderNotAuthenticatedForGroup" are delivery
    # restrictions on who may send to the recipient or group: the sender is refused.
    ("microsoft", r"submissionquotaexceeded", "speeding"),
    ("microsoft", r"\bresolver\.rst\.(?:notauthorized|authrequired|sendernotauthenticated)", "rejected"),
    # Yahoo Mail (senders.yahooinc.com "SMTP error codes"): Yahoo looks recipients up at end of DATA,
    # so its "554 delivery error: dd This user doesn't have a yahoo.com account" is a missing mailbox,
    # not a content filter's verdict; "dd ... This mailbox is disabled (554.30)" is a disabled one.
    ("yahoo", r"delivery error: dd this user doesn't have a \S+ account", "userunknown"),
    ("yahoo", r"delivery error: dd .{0,80}this (?:mailbox|account) (?:is|has been) disabled", "suspend"),
    # Tencent QQ Mail (service.mail.qq.com help "subtype=1"): "Ip frequency limited": too many
    # connections from one IP in a short time.
    ("tencent", r"\bip frequency limited\b", "toomanyconn"),
)
_PHRASES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (name, re.compile(pattern), reason) for name, pattern, reason in PROVIDER_PHRASES
)


def _orange(flat: str) -> str | None:
    found = _ORANGE_RE.findall(flat)
    return ORANGE_CODES.get(found[-1]) if found else None


def _spectrum(flat: str) -> str | None:
    m = _SPECTRUM_RE.search(flat)
    if m is None:
        return None
    number = int(m.group(1))
    return next((reason for low, high, reason in SPECTRUM_RANGES if low <= number <= high), None)


def _cox(flat: str) -> str | None:
    m = _COX_RE.search(flat)
    if m is None:
        return None
    if m.group(1) in ("ipbl",):
        return "blocked"   # IPBLxxxx: the sending IP is on one or more DNSBLs
    if m.group(1) in ("urlbl",):
        return "spamdetected"   # URLBLxxx: a URL in the body is on a URI block list
    return COX_CODES.get(m.group(1))


def _facebook(flat: str) -> str | None:
    m = _FACEBOOK_RE.search(flat)
    return FACEBOOK_CODES.get(m.group(1)) if m else None


def _microsoft(flat: str) -> str | None:
    if _MICROSOFT_DBEB.search(flat):
        return "userunknown"
    m = _MICROSOFT_RE.search(flat)
    return MICROSOFT_CODES.get(m.group(1)) if m else None


def _phrases(flat: str) -> str | None:
    return next((reason for name, pattern, reason in _PHRASES
                 if provider_enabled(name) and pattern.search(flat)), None)


_FAMILIES: tuple[tuple[str, Callable[[str], str | None]], ...] = (
    ("orange", _orange), ("spectrum", _spectrum), ("cox", _cox), ("facebook", _facebook),
    ("microsoft", _microsoft), ("", _phrases),
)
PROVIDERS: frozenset[str] = frozenset({name for name, _ in _FAMILIES if name}
                                      | {name for name, _, _ in PROVIDER_PHRASES})


def provider_reason(text: str) -> str | None:
    """The reason a provider's own error code or wording names in `text`, or None."""
    if not text:
        return None
    flat = " ".join(text.lower().split())
    for name, family in _FAMILIES:
        reason = family(flat) if not name or provider_enabled(name) else None
        if reason:
            return reason
    return None
