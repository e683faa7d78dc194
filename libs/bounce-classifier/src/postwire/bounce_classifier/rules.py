"""Phrase rules: which words in a diagnostic text name which failure reason.

Written for Postwire from how MTAs and mailbox providers word their rejections (RFC 3463 texts,
Postfix/Exim/Sendmail/qmail defaults, the published error pages of Gmail, Microsoft, Yahoo, …).
Rules are checked in order and the first match wins, so the order encodes precedence: a message that
says "mailbox full" and "5.1.1" is about a full mailbox; "blocked … listed at spamhaus" is about the IP's
reputation, not a generic block. Each pattern is a regular expression on lowercased, whitespace-collapsed
text; keep them short and general (a phrase, not a provider's whole sentence).

Two tiers. `_RULES` are phrases that name a reason by themselves ("mailbox full", "relay access denied");
`_WEAK_RULES` are single generic words ("policy", "blocked", "sender", "try again later") that only lean
one way, so `classify_reply` weighs them below the enhanced status code. A phrase that only one MTA or
provider writes belongs in `providers.py`, tagged with its name, not here: the cross-validation switches
such knowledge off for the provider's own mails, and a phrase here would escape that check.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# The recipient (or its mailbox's settings) chose to refuse the mail: the mailbox exists, whatever status
# code the server attached (Facebook answers "550 5.1.1 ... Refused due to recipient preferences").
_RECIPIENT_CHOICE: Sequence[str] = (
    # not "rejected by the recipient domain" (Gmail's preface to whatever the remote server said)
    r"(?:rejected|refused|blocked) by (?:the )?(?:recipient|user)\b(?! (?:domain|server|system|host))",
    r"(?:receiver|recipient|user) has blocked",
    r"due to (?:the )?recipient'?s? (?:preferences|settings|polic)",
    r"recipient'?s? (?:preferences|settings|filter)", r"only accept(?:s|ing)? mail from",
)

_RULES: Sequence[tuple[str, Sequence[str]]] = (
    ("virusdetected", (
        r"virus", r"malware", r"infected", r"contains? (?:a )?(?:harmful|malicious)",
        r"executable (?:file|attachment)s? (?:are|is) not allowed",
    )),
    ("mailererror", (
        r"pipe to \|",  # Exim's pipe transport: the local program the mail was piped to failed
        r"command died with (?:status|signal)", r"command time limit exceeded",  # Postfix local(8), pipe(8)
        r"child process of \S+ transport returned",  # Exim's pipe transport
    )),
    ("notcompliantrfc", (
        r"(?:not |non-?)rfc ?(?:5322|2822|822)",
        r"rfc ?(?:5322|2822|822) (?:complian|violation|standard)", r"multiple addresses in",
        r"duplicate (?:[\w-]+ )?headers?", r"(?:not|doesn't|does not) comply with rfc ?(?:5322|2822|822)",
        r"not (?:rfc )?compliant", r"multiple (?:subject|from|to|date|message-id) headers",
        r"must be rfc ?(?:5322|2822|822)\b.{0,25}complian",  # Exchange Online 5.7.512
        # Gmail: a header RFC 5322 requires ("missing a valid Message-ID header", "... address in From:")
        r"missing (?:a )?(?:valid )?(?:address in (?:the )?)?(?:message-?id|date|from)\b",
    )),
    ("securityerror", (
        r"smtp auth(?:entication)?\b", r"without authentication", r"authentication required",
        r"unauthenticated (?:senders?|relay|users?)", r"must (?:be )?authenticate",
        r"client (?:was )?not authenticated",
    )),
    ("failedstarttls", (
        r"starttls", r"tls (?:is )?required", r"must issue a starttls", r"requiretls",
        r"encryption required", r"(?:does not|doesn't) support tls",
        r"(?:wasn't|was not|not) sent over (?:a )?(?:tls|secure|encrypted)",  # Gmail 4.7.29/5.7.29
    )),
    ("authfailure", (
        r"\bspf\b.*\b(?:fail|check|record|validation|reject)", r"\bdkim\b", r"\bdmarc\b",
        r"sender policy framework", r"not authorized to send on behalf", r"unauthenticated email",
        r"authentication (?:check|result)s? (?:failed|fail)", r"email authentication failed",
        r"does not pass (?:spf|dkim|dmarc)", r"failed? (?:spf|dkim|dmarc)",
        r"\b(?:spf|dkim|dmarc) (?:authentication|check|validation|verification) (?:didn't|did not|does not|"
        r"doesn't) pass",
        r"5\.7\.(?:2[0-4]|26|29)\b", r"sender (?:is )?not authenticated",
        r"\b(?:spf|dkim|dmarc) polic(?:y|ies)",  # Zoho: "Email rejected per SPF policy"
    )),
    ("requireptr", (
        r"reverse dns", r"\bptr\b", r"rdns", r"no dns record for (?:your|the) (?:ip|host)",
        r"cannot find your (?:reverse )?host ?name", r"reverse (?:lookup|mapping)", r"name lookup failed for",
        r"ip name lookup", r"client host .* has no (?:name|hostname)", r"not resolve your address",
        r"unresolvable (?:relay )?host ?name", r"cannot resolve your (?:ip|address|host)",
        r"no (?:reverse|ptr)", r"5\.7\.25\b", r"hostname (?:does not|doesn't) match",
    )),
    ("badreputation", (
        r"bad reputation", r"poor reputation", r"low reputation", r"ip reputation",
        r"sender reputation", r"reputation (?:of|is)", r"user complaints",
    )),
    ("blocked", (  # the refusal names the sending IP's traffic: a block of the client, whatever the rate
        r"unsolicited (?:e-?)?mail originating from your (?:ip|address|network|server)",
    )),
    ("toomanyconn", (
        r"too many (?:concurrent |simultaneous |open |parallel )?(?:smtp |inbound |incoming )?"
        r"(?:connections|sessions)",
        r"connection (?:count|limit|rate limit)s? (?:exceeded|reached)", r"concurrent connections? limit",
        r"connection rate limit",
        r"(?:maximum|max) (?:number of )?(?:concurrent |simultaneous )?(?:server |smtp |inbound )?"
        r"connections",
        r"connections? (?:per|from) (?:this |your )?(?:ip|host|client)[^.]{0,30}(?:exceeded|limit|too many)",
        r"exceeded (?:the )?(?:maximum |max )?(?:number of )?(?:concurrent |simultaneous )?connections",
    )),
    ("speeding", (
        r"too many recipients (?:received )?(?:this|per|in the last|from) ", r"receiving mail too quickly",
        r"sending (?:quota|limit)s? (?:exceeded|reached)", r"(?:daily|hourly) (?:sending )?(?:quota|limit)",
        r"rate limit", r"too many (?:messages|emails|mails)(?! in)", r"sending (?:too fast|rate)",
        r"exceeded (?:the )?(?:message|sending) rate", r"throttl", r"unusual rate",
        r"too much mail", r"receiving mail at a rate", r"messages per (?:hour|minute|second|day)",
        r"(?:peak|relay|sending|daily|hourly) (?:smtp )?(?:relay )?limits? (?:exceeded|reached)",
        r"unusual sending activity",
        r"per (?:hour|minute|second|day) (?:message )?(?:receive |send |sending |delivery )?limit",
        r"(?:sent|send|received) per (?:hour|minute|second|day)",
    )),
    ("norelaying", (
        r"not configured to relay", r"relay (?:mail )?(?:through|via) this server",
        r"relay(?:ing)? (?:access )?(?:denied|disallowed|not (?:permitted|allowed))",
        r"not permitted to relay",
        r"unable to relay", r"relay not permitted", r"we do not relay", r"relaying (?:mail )?(?:to|from) .* "
        r"(?:denied|not allowed)", r"no relaying", r"not a gateway", r"relay access",
        r"cannot relay", r"mail relay denied", r"is not (?:a )?(?:local|permitted) (?:domain|relay)",
        r"allowed rcpthosts",  # qmail-smtpd: "that domain isn't in my list of allowed rcpthosts"
    )),
    ("rejected", (  # a block list entry for the sender's address, not for the client IP
        r"(?:from|sender) (?:an )?(?:e-?mail )?address that (?:has been|is) (?:blacklisted|blocked)",
        r"sender (?:e-?mail )?address (?:is |has been )?(?:blacklisted|block ?listed)",
        r"sender address \[[^\]]*\] blocked using",  # Postfix reject_rhsbl_sender: the sender's domain
        r"not (?:allowed|permitted|authori[sz]ed) to send as\b",  # Exchange 5.2.252 SendAsDenied
    )),
    ("spamdetected", (  # a URI block list names a link in the body: the content, not the client IP
        r"blacklisted (?:url|link|uri|domain in)", r"\buribl\b", r"\bsurbl\b",
    )),
    ("blocked", (
        r"use the smtp server of your isp", r"use your (?:isp|provider)'?s? (?:smtp|mail|outgoing) server",
        r"blacklist", r"block ?list", r"spamhaus", r"spamcop", r"\bdnsbls?\b", r"\brbls?\b",
        r"listed (?:at|on|in|by) ", r"(?:banned|invalid|blocked) (?:sending|source|client|connecting) ip",
        r"(?:sending|source|client|connecting) ip (?:address )?(?:is |has been )?(?:banned|blocked|invalid)",
        r"for sending\b.{0,20}\bip\b|\bip\b.{0,20}for sending",
        r"client host (?:\[[^\]]*\] )?(?:rejected|blocked)",
        r"(?:helo|ehlo|my name)(?: command)? (?:was )?rejected",
        r"\bip\b[^.]{0,40}\bnot (?:in (?:the |our )?(?:whitelist|allow ?list)|authori[sz]ed|allowed"
        r"|permitted)",
        r"ip (?:address )?(?:has been |is )?(?:blocked|banned)", r"blocked (?:using|by) ",
    )),
    ("rejected", (
        r"sender (?:address )?(?:was |is )?"
        r"(?:rejected|refused|denied|blocked|unknown|not (?:allowed|permitted))",
        r"(?:from|sender|envelope) address (?:rejected|invalid|refused)", r"domain of sender",
        r"sender domain (?:rejected|invalid|unknown|does not)", r"sender verif", r"unverified sender",
        r"not (?:a )?member", r"not allowed to post", r"not permitted to post",
        r"only (?:members|subscribers)", r"permission to post",
        r"(?:provide|use) a valid (?:from|sender)", r"invalid (?:from|sender)(?: address)?\b",
        r"unresolvable (?:rfc\.? ?5321 )?(?:from|sender) (?:domain|address)",
    )),
    ("systemfull", (
        r"system (?:is )?full", r"insufficient (?:disk|system) (?:space|storage)",
        r"insufficient system storage", r"out of disk",
    )),
    ("mesgtoobig", (
        r"message (?:size )?(?:is )?too (?:big|large)", r"message (?:size )?exceeds",
        r"size (?:limit|exceeds)", r"exceeds (?:the )?(?:maximum )?(?:message )?size",
        r"message length exceeds", r"mail size", r"too large for", r"size of (?:the )?message",
        r"maximum (?:allowed )?(?:message )?size", r"message file too big",
    )),
    ("exceedlimit", (
        r"quota exceeded .*daily", r"too many recipients", r"exceeds? (?:the )?limit", r"limit exceeded",
        r"message too large for (?:this|the) (?:mailbox|recipient)",
    )),
    ("filtered", (  # the recipient's own filter or settings refused the mail (the mailbox exists)
        r"rejected by (?:the )?filter", *_RECIPIENT_CHOICE,
        r"message filtered", r"user rejected",
        r"recipient (?:is )?not (?:authori[sz]ed|allowed|permitted) to receive",
    )),
    ("mailboxfull", (
        r"mailbox (?:is )?(?:full|over ?quota)", r"over ?quota", r"quota (?:exceeded|full|violation)",
        r"(?:mailbox|mail ?box|disk|storage) (?:space )?(?:quota )?(?:exceeded|full)",
        r"exceed(?:ed|s)? (?:the |his |her |their )?(?:storage|disk|mailbox)? ?quota",
        r"user(?:'s)? (?:mailbox )?(?:is )?over", r"insufficient storage space",
        r"mailbox has exceeded", r"full mailbox", r"not enough (?:storage|space)",
        r"mailfolder is full", r"account is full", r"inbox is full", r"out of storage",
        r"mailbox (?:size )?limit", r"no space left", r"would exceed (?:the )?quota",
        r"is full", r"maildir over", r"\bmailbox full\b",
        r"disk ?space quota",  # vpopmail: "the user's maildir has overdrawn his diskspace quota"
        r"error writing message: file too large",  # Postfix local(8): the mailbox reached mailbox_size_limit
        r"メールボックスが一杯", r"容量", r"переполнен",
    )),
    ("hasmoved", (
        r"has moved", r"address (?:has )?changed", r"no longer (?:valid|in use|available) .*(?:moved|new)",
        r"user has moved", r"moved to",
    )),
    ("suspend", (
        r"(?:account|mailbox|user|address) (?:has been |is |was )?(?:temporarily )?"
        r"(?:disabled|suspended|deactivated|inactive|locked|blocked|frozen|expired|closed|discontinued)",
        r"(?:disabled|suspended|inactive|deactivated|expired|closed|locked) (?:account|mailbox|user)",
        r"not (?:an )?active", r"no longer active", r"account (?:has been )?terminated",
        r"recipient (?:is )?(?:suspended|deactivated|disabled|inactive)",
        r"is (?:currently )?unavailable due to", r"temporar(?:y|ily) locked",
        r"account\b[^.]{0,40}\bis (?:disabled|inactive|suspended)", r"has been disabled",
        r"account .*(?:temporarily|permanently) (?:disabled|unavailable)",
    )),
    ("notaccept", (
        # the domain takes no mail at all; "does not accept mail from <whom>" is a restriction
        r"does not accept (?:any )?(?:e-?)?mail(?! from)", r"doesn't accept mail(?! from)", r"null mx",
        r"not accepting (?:any )?(?:e-?)?mail", r"accepts no mail", r"no mail accepted",
        r"mail is not accepted", r"host does not receive any mail", r"no mx (?:record|found|host)",
        r"couldn't find a mail exchanger", r"indicated no smtp service",
    )),
    ("hostunknown", (
        r"host (?:or domain name )?not found", r"unknown host", r"host unknown", r"domain (?:is )?unknown",
        r"unknown domain", r"domain (?:name )?(?:does not|doesn't) exist", r"no such domain",
        r"domain (?:not found|is not (?:valid|found)|lookup failed)", r"unrouteable (?:mail )?domain",
        r"unrouteable address", r"name or service not known", r"domain is not reachable",
        r"\b[a-z0-9-]+(?:\.[a-z0-9-]+)+\.? does not exist",
        r"host name lookup failure", r"nxdomain", r"non-?existent (?:domain|host)",
        r"recipient (?:domain|address) (?:is )?(?:invalid|unknown)", r"invalid domain",
        r"all relevant mx records point to non-existent hosts", r"mail for .* loops back to myself",
        r"could not be resolved", r"no route to (?:domain|host)",
        r"bad destination (?:system|host)", r"dns(?: error)?.*(?:not found|does not exist)",
        r"domain (?:has been )?(?:disabled|removed)",
    )),
    ("userunknown", (
        r"user(?:name)? (?:is )?unknown", r"unknown (?:local )?(?:user|recipient|mailbox|address|alias)",
        r"no such (?:user|mailbox|recipient|address|local user|person|account)",
        r"user(?: account)? (?:does not|doesn't|did not) exist", r"recipient (?:does not|doesn't) exist",
        r"(?:mailbox|address|account|recipient|user|e-?mail address) "
        r"(?:is )?(?:not found|does not exist|doesn't exist|unavailable|invalid|not valid|unknown)",
        r"invalid (?:recipient|mailbox|user|address|e-?mail)",
        r"(?:recipient|user|mailbox) not (?:found|known)",
        r"not (?:a )?(?:known|valid) (?:user|recipient|mailbox)", r"bad recipient", r"user not listed",
        r"no mailbox", r"mailbox (?:is )?not (?:available|present)", r"no valid recipients",
        r"recipient address rejected: (?:user unknown|undeliverable|unknown|access denied)",
        r"address unknown", r"undeliverable address", r"address (?:couldn't|could not|can't|cannot) be found",
        r"invalid (?:final delivery )?user ?id", r"unknown or illegal alias",
        r"addressee unknown", r"not our customer", r"user not found",
        r"account (?:does not|doesn't) exist", r"no account by that name", r"doesn't have a .* account",
        r"does not have an account", r"name is not recognized", r"recipient not found",
        r"email address (?:could not be|wasn't|was not) found", r"not listed in",
        r"mailbox (?:name )?not allowed", r"unknown or invalid",
        r"destination address (?:does not|doesn't) exist",
        r"the email account that you tried to reach does not exist",
        r"this user doesn't have", r"recipientnotfound", r"recipient not found by",
        r"has no local mailbox", r"sorry, no mailbox here",
        r"not a valid (?:mailbox|user|recipient)", r"user invalid",
    )),
    ("expired", (
        r"delivery time expired", r"(?:message|mail) (?:has )?(?:been )?(?:expired|timed out)",
        r"(?:delivery|retry) (?:period|time limit|lifetime) (?:has )?(?:expired|exceeded)",
        r"retry (?:time|timeout) (?:not reached|exceeded)", r"could not be delivered for \d+",
        r"cannot send message for", r"queue ?time", r"giving up", r"gave up",
        r"too long in (?:the )?queue", r"has been delayed", r"delivery (?:is )?delayed",
        r"still (?:being )?retried", r"retry timeout exceeded", r"unable to deliver for",
        r"maximum time", r"no more retries", r"failed after (?:repeated )?attempts",
        r"connection timed out", r"operation timed out", r"did not accept our requests to connect",
        r"queue too long", r"failing for a long time", r"will be retried for", r"envelope expired",
        r"continue trying", r"still undelivered after", r"will keep trying until",
        r"message (?:could not|couldn't) be delivered within", r"lifetime",
        r"delivery attempts will continue", r"will (?:continue to )?(?:retry|try)", r"not yet been delivered",
        r"still (?:trying|retrying|undeliverable)", r"undelivered for \d+", r"in the queue for",
        r"max(?:imum)? (?:number of )?(?:retries|delivery attempts)", r"retries exceeded", r"retry limit",
        r"expired after",
        r"(?:delivery|recipients?) .{0,40}aborted after \d+(?:\.\d+)? ?(?:hour|day|minute)",  # a time limit
    )),
    ("policyviolation", (
        r"content presents a potential(?: security issue)?",  # Gmail's attachment/content policy
        r"policy (?:violation|reasons|rejection)", r"violat(?:es|ed|ion) (?:of )?(?:our|the|local) "
        r"(?:policy|policies|terms)", r"prohibited (?:content|attachment)", r"content policy",
        r"not allowed by (?:local )?policy", r"message (?:rejected|refused) (?:by|due to) (?:local )?policy",
        r"acceptable use", r"(?:local|site|security|anti-?spam|content|mail) polic(?:y|ies)",
        r"(?:illegal|forbidden|disallowed|banned) (?:file )?(?:attachment|file type)",
        r"(?:does not|doesn't) allow (?:external )?forwarding", r"administrative prohibition",
    )),
    ("spamdetected", (
        r"\bspam\b", r"message content rejected", r"scored as spam", r"junk mail", r"unsolicited",
        r"bulk (?:e-?)?mail", r"spamassassin",
        r"looks like spam", r"content filter(?:ing)? (?:rejected|detected)", r"message (?:content )?rejected",
        r"detected as spam", r"scored too high", r"\buce\b", r"classified as spam", r"spam score",
        r"phish", r"rejected due to content", r"due to (?:its |the )?content",
    )),
    ("blocked", (
        r"blocked because", r"sorbs", r"barracuda",
        r"(?:ip|host|client) (?:address )?(?:has been |is |was )?(?:blocked|"
        r"rejected|refused|denied|banned|blacklisted)",
        r"connection (?:has been |is |was )?(?:blocked|rejected|denied|banned|blacklisted)",
        r"not allowed to (?:connect|send)", r"your ip", r"refused to talk", r"poor reputation", r"dynamic ip",
        r"residential", r"dial-?up",
        # RFC 5321's 421 text: the server ends the session on this client, whatever the command was
        r"service not available,? closing (?:the )?transmission channel",
    )),
    ("filtered", (
        r"header (?:error|rejected|check)", r"filtered", r"content (?:rejected|refused)",
        r"not accepting mail from", r"refuse(?:d|s) to accept", r"domain restriction", r"mail filter",
        r"content filter",
    )),
    ("contenterror", (
        r"content (?:error|problem)", r"invalid (?:mime|header|content)", r"8bit",
        r"malformed(?! or unexpected name server| address)",  # Postfix's DNS error is a network error
        r"line (?:too long|length)", r"mime (?:error|format)", r"character set",
    )),
    ("syntaxerror", (
        r"syntax error", r"malformed address",
        r"command (?:not )?(?:recognized|unrecognized|not implemented)",
        r"bad sequence of commands", r"line too long", r"invalid command", r"unrecognized command",
        r"protocol violation",
        r"parameter (?:not )?(?:recognized|implemented)",
    )),
    ("networkerror", (
        r"connection (?:timed out|reset|refused|closed|lost|dropped)", r"timed out", r"timeout",
        r"network (?:is )?(?:error|unreachable|failure)", r"no route to", r"unable to connect",
        r"could not connect", r"connect to .* failed",
        r"(?:able|unable) to establish an smtp connection", r"lost connection",
        r"dns (?:error|failure|lookup|query)", r"(?:cname|mx) lookup failed",
        r"temporary (?:dns|lookup) failure", r"host is unreachable", r"mail (?:for .* )?loops? back",
        r"routing loop", r"too many hops", r"hop count exceeded",
        r"forwarding loop", r"(?:mail|message) loop", r"loop detected",  # Postfix local(8): forwarding loop
        r"malformed or unexpected name server reply",
    )),
    ("mailererror", (
        r"mailer error", r"exit (?:code|status)", r"command failed", r"pipe to", r"procmail",
        r"local delivery failed", r"program (?:exited|failed)", r"x-unix;",
    )),
    ("systemerror", (
        r"system error", r"internal (?:server )?error", r"local error", r"configuration error",
        r"misconfigur",
        r"resources? (?:temporarily )?unavailable", r"mailing list expansion",
        r"error in processing", r"queue file write error", r"i/o error", r"out of memory",
        r"^\W*(?:\d{3} )?transaction failed\W*$",  # RFC 5321's own text for a bare 554, nothing else said
    )),
)

# Generic words: they say something only when nothing more precise did. `classify_reply` consults
# them after the enhanced status (an X.7.1 is then resolved to blocked, rejected, spam or policy by
# them) and before the bare reply code.
_WEAK_RULES: Sequence[tuple[str, Sequence[str]]] = (
    # the server turns connections away for now: its load, not a failure of it (REASONS.md toomanyconn)
    ("toomanyconn", (r"server (?:is )?(?:too )?busy", r"try (?:again )?later,? closing (?:the )?connection")),
    ("spamdetected", (r"suspicious", r"\bjunk\b")),
    ("policyviolation", (r"\bpolicy\b", r"\bpolicies\b", r"\bviolation\b", r"\bprohibited\b")),
    ("rejected", (r"return path", r"envelope sender", r"sender is not", r"\bsender\b", r"mail from\b")),
    ("blocked", (
        r"access denied", r"rejected due to", r"your (?:host|network|server|ip|address)",
        r"\bblocked\b", r"\bbanned\b", r"denied",
        r"messages from \d+\.\d+\.\d+\.\d+", r"(?:from|for) \[\d+\.\d+\.\d+\.\d+\]",
    )),
    ("filtered", (r"restricted",)),
    ("userunknown", (
        r"recipient rejected", r"no longer (?:valid|available|exists?)", r"invalid address",
        r"not listed in", r"unknown address",
        # RFC 5321's text for 550 also covers "no access" and policy refusals: a hint, not a verdict
        r"mailbox (?:is )?unavailable", r"requested action not taken: mailbox",
    )),
    ("expired", (r"\bdeferred\b", r"\bdelayed\b", r"retry", r"\bqueued\b")),
    ("networkerror", (r"timed out", r"timeout", r"connection refused", r"unreachable")),
    ("systemerror", (
        # "temporary local problem" names this host's trouble; a bare "temporary failure" only restates
        # the 4xx class, which says nothing about the cause (onhold when nothing else is known)
        r"server error", r"temporary (?:local |system )(?:problem|failure|error)", r"try (?:again )?later",
        r"service (?:is )?(?:currently |temporarily )?(?:not available|unavailable)", r"transaction failed",
    )),
)

_Compiled = tuple[tuple[str, tuple[re.Pattern[str], ...]], ...]


def _compile(rules: Sequence[tuple[str, Sequence[str]]]) -> _Compiled:
    return tuple((reason, tuple(re.compile(p) for p in patterns)) for reason, patterns in rules)


_COMPILED = _compile(_RULES)
_COMPILED_WEAK = _compile(_WEAK_RULES)


# "550-5.7.1 " continuation prefixes of multi-line replies split phrases in two: drop them.
_REPLY_PREFIX = re.compile(r"(?<![\w.])[245]\d\d[ \-](?:[245]\.\d{1,3}\.\d{1,3}\s)?")


def normalise(text: str) -> str:
    """Lowercase and collapse whitespace so a phrase folded across lines still matches."""
    return " ".join(text.lower().split())


def match_text(text: str) -> str | None:
    """The first reason whose precise phrases occur in `text`, or None when the text names no reason."""
    return _first(_COMPILED, text)


def match_weak(text: str) -> str | None:
    """The first reason a generic word in `text` leans to ("policy", "blocked", "try again later").

    Weaker evidence than an enhanced status code: use it only when neither a phrase nor the status decided.
    """
    return _first(_COMPILED_WEAK, text)


def _first(rules: _Compiled, text: str) -> str | None:
    if not text:
        return None
    flat = normalise(_REPLY_PREFIX.sub(" ", normalise(text)))
    for reason, patterns in rules:
        if any(p.search(flat) for p in patterns):
            return reason
    return None


def names_reason(text: str, reason: str) -> bool:
    """Whether a precise phrase of `reason` occurs in `text`, whatever other reasons it also names."""
    if not text:
        return False
    flat = normalise(_REPLY_PREFIX.sub(" ", normalise(text)))
    return any(p.search(flat) for name, patterns in _COMPILED if name == reason for p in patterns)


_COMPILED_CHOICE = tuple(re.compile(p) for p in _RECIPIENT_CHOICE)


def names_recipient_choice(text: str) -> bool:
    """Whether `text` says the recipient's own settings refused the mail: a mailbox that exists."""
    flat = normalise(_REPLY_PREFIX.sub(" ", normalise(text))) if text else ""
    return any(p.search(flat) for p in _COMPILED_CHOICE)


def reasons_in_order() -> list[str]:
    """The precedence order, exposed for tests and documentation."""
    return [reason for reason, _ in _RULES]
