"""Reading events back: the one JSON shape of an event (events API and webhook payloads), the filtered,
cursor-paginated listing, a time-window listing (the SMTPeter-compatible API), the templates messages
were built from, per-day counts and totals. See docs/events.md.

Pagination is on the recording order (txid, seq), never on ``at``: an event carries its publish time,
and one recorded late (a redelivery, a recorder that was down) would land *before* a cursor on ``at``
and be skipped. ``seq`` alone is not enough either, because sequence values are taken at INSERT and
transactions commit in another order; so a listing only returns rows of transactions older than every
transaction still running (``pg_snapshot_xmin``). Those can gain no more rows, and every later commit
sorts after the cursor: each event is returned exactly once, however events keep arriving.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Row,
    Select,
    SQLColumnExpression,
    String,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from postwire.core.events import EVENT_TYPES
from postwire.db.models import BOUNCE_LIKE, COUNTED_TAG_MAX, Event, EventCount, Message
from postwire.v1 import envelope_pb2

BOUNCE_TYPES = ("bounced", "failed", "complained")

# the type-specific fields of each event type; types not listed get every known one
_DELIVERY = ("smtp_code", "enhanced_status", "response", "mx_host", "attempt")
_CLASSIFIED = ("reason", "hardbounce")
_CLIENT = ("client_ip", "user_agent", "unique")
FIELDS_BY_TYPE: dict[str, tuple[str, ...]] = {
    # plus the RFC 3461 parameters when the sender gave them (bounce forwarding honours them), and the
    # stored template the message was built from (null when none)
    "accepted": ("from", "subject", "size", "source", "dsn", "notify", "orcpt", "template_id"),
    "delivered": _DELIVERY,
    "deferred": (*_DELIVERY, "reason"),
    "failed": (*_DELIVERY, *_CLASSIFIED),
    "bounced": (*_DELIVERY, *_CLASSIFIED, "remote_mta"),
    "complained": ("feedback_type", "remote_mta"),
    "suppressed": ("reason",),
    "opened": _CLIENT,
    "clicked": ("url", "link_index", *_CLIENT),
    # a one-click unsubscribe (docs/unsubscribe.md): the list, '' for all of the account's bulk mail
    "unsubscribed": ("list_id", "client_ip", "user_agent"),
    # of the account, not of a message: why its bulk lane was paused or resumed (postwire.db.bulk_pause)
    "bulk_paused": ("reason",),
    "bulk_resumed": ("reason",),
}
_ALL_FIELDS = (*_DELIVERY, *_CLASSIFIED, "feedback_type", "remote_mta", "url", "link_index", *_CLIENT)
_FALSE_BY_DEFAULT = ("hardbounce", "unique")
# proto field → data key, as the recorder stores it (recorder.event_data): non-default values only
_PROTO_FIELDS = ("smtp_code", "enhanced_status", "response", "mx_host", "mail_from", "subject", "size",
                 "source", "reason", "feedback_type", "remote_mta", "url", "link_index", "client_ip",
                 "user_agent", "unique", "template_id", "list_id")

# the transaction horizon: every transaction with a smaller id has finished
_HORIZON = text("(pg_snapshot_xmin(pg_current_snapshot())::text::bigint)")


class InvalidCursor(ValueError):
    """The cursor was not produced by this API (or was altered)."""


# ---------------------------------------------------------------------------------------------- JSON


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def event_json(event_id: str, type_: str, at: datetime, message_id: str, recipient: str,
               data: dict[str, Any]) -> dict[str, Any]:
    """The public JSON of one event. The API serves it and webhooks POST it: keep them one shape."""
    out: dict[str, Any] = {
        "id": event_id, "type": type_, "at": _iso(at), "message_id": message_id, "recipient": recipient,
        "tags": list(data.get("tags") or []), "metadata": dict(data.get("metadata") or {}),
    }
    for name in FIELDS_BY_TYPE.get(type_, _ALL_FIELDS):
        key = "mail_from" if name == "from" else name
        # the recorder stores non-default values only: a missing flag is false, a missing index 0
        default: Any = False if name in _FALSE_BY_DEFAULT else 0 if name == "link_index" else None
        out[name] = data.get(key, default)
    return out


def event_row_json(row: Event) -> dict[str, Any]:
    return event_json(row.event_id, row.type, row.at, row.message_id, row.recipient, row.data or {})


def event_proto_data(ev: envelope_pb2.Event) -> dict[str, Any]:
    """The ``events.data`` the recorder stores for ``ev``, so a webhook payload built straight from the
    NATS message matches what the API later returns for the same event."""
    data: dict[str, Any] = {"attempt": ev.attempt, "tags": list(ev.tags), "metadata": dict(ev.metadata)}
    for name in _PROTO_FIELDS:
        value = getattr(ev, name)
        if value:
            data[name] = value
    if ev.type in ("failed", "bounced"):
        data["hardbounce"] = ev.hardbounce
    if ev.type == "accepted":
        data.update(dsn_data(ev))
    return data


def dsn_data(ev: envelope_pb2.Event) -> dict[str, Any]:
    """The RFC 3461 parameters of an ``accepted`` event as stored in events.data: ``dsn`` = {ret, envid}
    and ``notify``, ``orcpt``, each only when given (bounce forwarding reads them back)."""
    data: dict[str, Any] = {}
    if ev.dsn.ret or ev.dsn.envid:
        data["dsn"] = {"ret": ev.dsn.ret, "envid": ev.dsn.envid}
    if ev.recipient_dsn.notify:
        data["notify"] = list(ev.recipient_dsn.notify)
    if ev.recipient_dsn.orcpt:
        data["orcpt"] = ev.recipient_dsn.orcpt
    return data


def event_proto_json(ev: envelope_pb2.Event) -> dict[str, Any]:
    return event_json(ev.event_id, ev.type, ev.at.ToDatetime(tzinfo=UTC), ev.message_id, ev.recipient,
                      event_proto_data(ev))


# -------------------------------------------------------------------------------------------- cursor


def encode_cursor(txid: int, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{txid}.{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        txid, seq = raw.split(".")
        return int(txid), int(seq)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor("invalid cursor; pass next_cursor (or resume_cursor) exactly as returned") \
            from None


# ------------------------------------------------------------------------------------------ listing


@dataclass(frozen=True)
class EventFilter:
    types: Sequence[str] = ()
    recipient: str | None = None
    message_id: str | None = None
    tag: str | None = None
    tags: Sequence[str] = ()  # every one of them (AND)
    domain: str | None = None  # events of the messages sent from this domain (sending_domain), any case
    template_id: int | None = None  # events of the messages built from this stored template
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    bounces_only: bool = False
    reason: str | None = None  # failures and bounces of this classified reason (userunknown, …)


@dataclass
class EventPage:
    events: list[dict[str, Any]] = field(default_factory=list)
    # set when the page is full: there may be more right now
    next_cursor: str | None = None
    # always set: where to continue later to get only newer events (polling)
    resume_cursor: str | None = None


def _tag_clause(*tags: str) -> ColumnElement[bool]:
    """``data->'tags' @> '["a", "b"]'`` (every tag present): the form the GIN index ix_events_tags
    serves."""
    return Event.data["tags"].op("@>")(cast(literal(list(tags), JSONB), JSONB))


def _bounce_clause() -> ColumnElement[bool]:
    """Bounces as customers mean it: async bounces, complaints and classified permanent failures. The
    predicate of the partial index ix_events_account_bounces_at, word for word and with constants rather
    than bound values, so the planner can prove the index applies in every plan, generic ones included."""
    return literal_column(f"({BOUNCE_LIKE})", Boolean)


def sending_domain(mail_from: SQLColumnExpression[str]) -> ColumnElement[str]:
    """The sending domain of a message with this ``mail_from``: the lower-cased part after the last '@',
    1 to 253 characters; NULL for the null sender, an address without '@' or a longer part. Migration
    0011's triggers count event_counts by the same expression, written out in SQL (a test runs both)."""
    after = func.split_part(mail_from, literal_column("'@'"), literal_column("-1"))
    return case((and_(func.strpos(mail_from, literal_column("'@'")) > 0,
                      func.length(after).between(literal_column("1"), literal_column("253"))),
                 func.lower(after)))


def _domain_clause(domain: str) -> ColumnElement[bool]:
    """The event's message (same account, primary key) is sent from ``domain``: what event_counts counts
    under that domain, so a range's partial days agree with its whole ones.

    The sending domain of each event's message, looked up by the primary key, compared: not EXISTS,
    which the planner turns into a join that may start from the messages (it cannot know how many are
    sent from a domain) and then reads every message of the domain: /v1/stats' two partial days of a
    30-day range on bench/console.py's account (283,000 messages, one domain) took 3 s that way, 0.18 s
    this way."""
    sent_from = select(sending_domain(Message.mail_from)).where(
        Message.id == Event.message_id, Message.account_id == Event.account_id).scalar_subquery()
    return sent_from == func.lower(domain)


def _template_messages(account_id: str, template_id: int) -> Select[str]:
    """The ids of the account's messages built from the template (ix_messages_account_template). A message
    sent with one id per recipient has a messages row per id, each from that recipient's accepted event,
    so every recipient's events are found."""
    return select(Message.id).where(Message.account_id == account_id, Message.template_id == template_id)


def _conditions(account_id: str, f: EventFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [Event.account_id == account_id]
    if f.types:
        where.append(Event.type.in_(list(f.types)))
    if f.bounces_only:
        where.append(_bounce_clause())
    if f.recipient:
        # stored as the sender wrote it; compared case-insensitively (index ix_events_account_recipient_lower)
        where.append(func.lower(Event.recipient) == f.recipient.lower())
    if f.message_id:
        where.append(Event.message_id == f.message_id)
    if f.tag:
        where.append(_tag_clause(f.tag))
    if f.tags:
        where.append(_tag_clause(*f.tags))
    if f.domain:
        where.append(_domain_clause(f.domain))
    if f.template_id is not None:
        where.append(Event.message_id.in_(_template_messages(account_id, f.template_id)))
    if f.reason:
        where.append(Event.data["reason"].as_string() == f.reason)
    if f.start is not None:
        where.append(Event.at >= f.start)
    if f.end is not None:
        where.append(Event.at < f.end)
    return where


async def list_events(session: AsyncSession, account_id: str, f: EventFilter, limit: int,
                      cursor: str | None = None) -> EventPage:
    """One page of the account's events in recording order, starting after ``cursor``."""
    where = _conditions(account_id, f)
    where.append(Event.txid < _HORIZON)
    if cursor is not None:
        where.append(tuple_(Event.txid, Event.seq) > tuple_(*decode_cursor(cursor)))
    rows = (await session.execute(
        select(Event).where(*where).order_by(Event.txid, Event.seq).limit(limit))).scalars().all()
    page = EventPage(events=[event_row_json(r) for r in rows], resume_cursor=cursor)
    if rows:
        page.resume_cursor = encode_cursor(rows[-1].txid, rows[-1].seq)
        if len(rows) == limit:
            page.next_cursor = page.resume_cursor
    return page


async def list_window(session: AsyncSession, account_id: str, f: EventFilter, limit: int) -> list[Event]:
    """The account's events matching ``f`` (give it a start and an end), by ``at``, at most ``limit``.
    Not paginated: for bounded windows (the SMTPeter-compatible GET /v1/events/{kind}/{value})."""
    return list((await session.execute(
        select(Event).where(*_conditions(account_id, f)).order_by(Event.at, Event.seq).limit(limit)
    )).scalars().all())


async def recent(session: AsyncSession, account_id: str, f: EventFilter, limit: int) -> list[Row[Any]]:
    """The account's newest events matching ``f``, newest first (the console's lists, its CSV of up to
    100,000 bounces): rows with an event's attributes (``at``, ``type``, ``data``, ...), not ORM objects,
    which would cost about twice the time per row and are not needed to read."""
    return list((await session.execute(
        select(Event.__table__).where(*_conditions(account_id, f))
        .order_by(Event.at.desc(), Event.seq.desc()).limit(limit))).all())


@dataclass(frozen=True)
class BounceGroup:
    """Bounce-like events of one reason, verdict, recipient domain and remote host (console overview)."""

    reason: str
    hard: bool
    domain: str
    host: str  # the MX that refused it or the MTA that reported it; "" when unknown
    count: int


async def bounce_groups(session: AsyncSession, account_id: str, f: EventFilter,
                        limit: int = 5000) -> list[BounceGroup]:
    """The events ``f`` selects (bounce-like ones: pass ``bounces_only``) counted per reason, hard/soft,
    recipient domain and remote host, largest groups first, in one aggregate over the partial index: the
    console's breakdown of a whole period, not of the rows on the page."""
    data = Event.data
    reason = func.coalesce(data["reason"].as_string(), case((Event.type == "complained", "feedback"),
                                                            else_="undefined"))
    hard = func.coalesce(data["hardbounce"].as_boolean(), literal_column("false"))
    domain = func.lower(func.split_part(Event.recipient, literal_column("'@'"), literal_column("-1")))
    host = func.lower(func.coalesce(data["mx_host"].as_string(), data["remote_mta"].as_string(),
                                    literal_column("''")))
    n = func.count().label("n")
    rows = await session.execute(select(reason, hard, domain, host, n).where(*_conditions(account_id, f))
                                 .group_by(reason, hard, domain, host).order_by(n.desc()).limit(limit))
    return [BounceGroup(str(r), bool(h), str(d), str(m), int(c)) for r, h, d, m, c in rows.all()]


BOUNCE_EXPORT_COLUMNS: Final = ("at", "type", "recipient", "message_id", "reason", "hardbounce", "smtp_code",
                                 "enhanced_status", "response")


async def bounce_export(session: AsyncSession, account_id: str, f: EventFilter, limit: int,
                        chunk: int = 2000) -> AsyncIterator[Sequence[Row[Any]]]:
    """The rows of a bounce CSV (BOUNCE_EXPORT_COLUMNS, newest first), ``chunk`` at a time from a
    server-side cursor: the fields are taken out of ``data`` by PostgreSQL, so no event's whole JSON is
    decoded in Python, and the first rows go out before the last are read."""
    data = Event.data
    query = (select(Event.at, Event.type, Event.recipient, Event.message_id,
                    data["reason"].as_string(), data["hardbounce"].as_string(), data["smtp_code"].as_string(),
                    data["enhanced_status"].as_string(), data["response"].as_string())
             .where(*_conditions(account_id, f)).order_by(Event.at.desc(), Event.seq.desc()).limit(limit))
    # on the Core connection: the ORM's streaming adds a loading step per row that costs as much as the fetch
    connection = await session.connection()
    result = await connection.stream(query.execution_options(yield_per=chunk))
    async for rows in result.partitions():
        yield rows


async def template_ids(session: AsyncSession, account_id: str, message_ids: Iterable[str]) -> dict[str, int]:
    """The stored template of each of these messages of the account that was built from one (others are
    left out), in one query. Only ``accepted`` events carry the template; this gives it to the events of
    any type (bounced, opened, …), whose services do not know it."""
    wanted = sorted(set(message_ids))
    if not wanted:
        return {}
    rows = await session.execute(select(Message.id, Message.template_id).where(
        Message.account_id == account_id, Message.template_id.is_not(None),
        Message.id == any_(bindparam("message_ids", wanted, type_=ARRAY(String)))))
    return {mid: tid for mid, tid in rows.all() if tid is not None}


# -------------------------------------------------------------------------------------------- stats


def default_range(start: datetime | None, end: datetime | None, days: int = 30) -> tuple[datetime, datetime]:
    """[start, end): by default the last ``days`` whole UTC days up to and including today."""
    if end is None:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        end = today + timedelta(days=1)
    if start is None:
        start = end - timedelta(days=days)
    return start, end


def _whole_days(start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """The whole UTC days inside [start, end) as [first midnight, last midnight), None when there is none."""
    lo, hi = start.astimezone(UTC), end.astimezone(UTC)
    first = lo.replace(hour=0, minute=0, second=0, microsecond=0)
    if first < lo:
        first += timedelta(days=1)
    last = hi.replace(hour=0, minute=0, second=0, microsecond=0)
    return (first, last) if first < last else None


def _counted_tag(tag: str | None) -> str | None:
    """The event_counts ``tag`` that answers for ``tag`` ('' for all events); None when it is not counted
    there (too long) and the events themselves must be counted."""
    if not tag:
        return ""
    return tag if len(tag) <= COUNTED_TAG_MAX else None


@dataclass(frozen=True)
class _Rolled:
    """The whole days of a range as event_counts holds them: the rows of one tag and one domain ('' for
    all), ``first`` up to ``last`` (exclusive)."""

    tag: str
    domain: str | None  # None: every domain ('')
    first: date
    last: date

    def where(self, account_id: str) -> list[ColumnElement[bool]]:
        domain = func.lower(self.domain) if self.domain else literal("")
        return [EventCount.account_id == account_id, EventCount.tag == self.tag, EventCount.domain == domain,
                EventCount.day >= self.first, EventCount.day < self.last]


def _split(start: datetime, end: datetime, tag: str | None, domain: str | None,
           ) -> tuple[_Rolled | None, list[tuple[datetime, datetime]]]:
    """[start, end) as the whole days read from event_counts and the parts of days at either end (or all
    of it) counted from the events."""
    days, counted = _whole_days(start, end), _counted_tag(tag)
    if days is None or counted is None:
        return None, [(start, end)] if start < end else []
    first, last = days
    edges = [(lo, hi) for lo, hi in ((start, first), (last, end)) if lo < hi]
    return _Rolled(counted, domain or None, first.date(), last.date()), edges


async def daily_counts(session: AsyncSession, account_id: str, start: datetime, end: datetime,
                       tag: str | None = None, domain: str | None = None) -> list[dict[str, Any]]:
    """Event counts per UTC day and type in [start, end), of the messages with ``tag`` and sent from
    ``domain`` when given; every day of the range appears, with every known type (0 when none), so charts
    need no gap filling. Whole days come from event_counts (a row per day and type, whatever the number of
    events), the part of a day at either end from the events."""
    counts: dict[date, dict[str, int]] = {}
    rolled, edges = _split(start, end, tag, domain)
    if rolled is not None:
        rows = (await session.execute(select(EventCount.day, EventCount.type, EventCount.n).where(
            *rolled.where(account_id)))).all()
        for d, type_, n in rows:
            if n:
                counts.setdefault(d, {})[type_] = int(n)
    day = func.date(func.timezone("UTC", Event.at)).label("day")
    for lo, hi in edges:
        where = _conditions(account_id, EventFilter(tag=tag, domain=domain, start=lo, end=hi))
        rows = (await session.execute(
            select(day, Event.type, func.count()).where(*where).group_by(day, Event.type))).all()
        for d, type_, n in rows:
            found = counts.setdefault(d, {})
            found[type_] = found.get(type_, 0) + int(n)
    out = []
    current, last_day = start.astimezone(UTC).date(), (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    while current <= last_day:
        found = counts.get(current, {})
        types = {t: found.get(t, 0) for t in EVENT_TYPES} | found
        out.append({"day": current.isoformat(), **types})
        current += timedelta(days=1)
    return out


# what the totals count (docs/events.md, "Totals"): the types each sums, and whether only the events
# flagged unique
_TOTALS: dict[str, tuple[tuple[str, ...], bool]] = {
    "messages": (("accepted",), False), "deliveries": (("delivered",), False),
    "bounces": (("failed", "bounced"), False), "opens": (("opened",), False),
    "unique_opens": (("opened",), True), "clicks": (("clicked",), False),
    "unique_clicks": (("clicked",), True),
}
TOTALS = tuple(_TOTALS)


async def totals(session: AsyncSession, account_id: str, start: datetime, end: datetime,
                 tag: str | None = None, domain: str | None = None) -> dict[str, int]:
    """Totals in [start, end): ``messages`` = accepted events (one per recipient of every message: the ids
    /v1/send hands out), ``deliveries`` = delivered, ``bounces`` = failed + bounced (recipients that did
    not get the message: refused at delivery, expired, or bounced later; not suppressed ones, which were
    never attempted), ``opens``/``clicks`` = every opened/clicked event and ``unique_*`` those flagged
    unique (a recipient's first open; the first click per recipient and link); of the messages with
    ``tag`` and sent from ``domain`` when given. Whole days from event_counts, the parts of days at either
    end from the events, as daily_counts."""
    out = dict.fromkeys(TOTALS, 0)
    rolled, edges = _split(start, end, tag, domain)
    if rolled is not None:
        row = (await session.execute(select(*[
            func.sum(EventCount.unique_n if only_unique else EventCount.n).filter(EventCount.type.in_(types))
            for types, only_unique in _TOTALS.values()]).where(*rolled.where(account_id)))).one()
        for name, value in zip(TOTALS, row, strict=True):
            out[name] += int(value or 0)
    # as event_counts counts it: a JSON true (never an error, whatever a row holds)
    unique = Event.data["unique"] == cast(literal(True, JSONB), JSONB)
    counts = [func.count().filter(Event.type.in_(types), unique) if only_unique
              else func.count().filter(Event.type.in_(types)) for types, only_unique in _TOTALS.values()]
    for lo, hi in edges:
        where = _conditions(account_id, EventFilter(tag=tag, domain=domain, start=lo, end=hi))
        row = (await session.execute(select(*counts).where(*where))).one()
        for name, value in zip(TOTALS, row, strict=True):
            out[name] += int(value or 0)
    return out


# ------------------------------------------------------------------------------------------- rates

# the windows of the bounce and complaint rates (docs/events.md, "Rates"), by their name in the API
RATE_WINDOWS: Final = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
_RATE_TYPES: Final = ("delivered", "failed", "bounced", "complained")


@dataclass(frozen=True)
class Rates:
    """The outcomes of one window and the two rates mailbox providers judge a sender by.

    ``complaint_rate`` = complained / delivered, as Gmail's Postmaster Tools and Yahoo compute it (spam
    reports per message delivered); ``bounce_rate`` = (failed + bounced) / (delivered + failed): the
    recipients that did not get the message (refused at delivery, expired, or bounced afterwards: the
    ``bounces`` of the totals) per recipient whose delivery was attempted to the end (a deferral is
    not an end; suppressed recipients were never attempted). An asynchronous bounce follows a
    ``delivered`` event, so the attempt is counted once. None when nothing was delivered (attempted)."""

    delivered: int
    failed: int
    bounced: int
    complained: int

    @property
    def bounces(self) -> int:
        return self.failed + self.bounced

    @property
    def attempted(self) -> int:
        return self.delivered + self.failed

    @property
    def bounce_rate(self) -> float | None:
        return self.bounces / self.attempted if self.attempted else None

    @property
    def complaint_rate(self) -> float | None:
        return self.complained / self.delivered if self.delivered else None

    def json(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "attempted": self.attempted, "bounced": self.bounces,
                "complained": self.complained, "bounce_rate": self.bounce_rate,
                "complaint_rate": self.complaint_rate}


async def window_rates(session: AsyncSession, account_id: str, start: datetime, end: datetime,
                       domain: str | None = None) -> Rates:
    """The account's delivered, failed, bounced and complained events in [start, end) (of the messages
    sent from ``domain`` when given): whole UTC days from event_counts, the parts of days at either end
    from the events (ix_events_account_at), as totals."""
    counts = dict.fromkeys(_RATE_TYPES, 0)
    rolled, edges = _split(start, end, None, domain)
    if rolled is not None:
        rows = await session.execute(select(EventCount.type, func.sum(EventCount.n)).where(
            *rolled.where(account_id), EventCount.type.in_(_RATE_TYPES)).group_by(EventCount.type))
        for type_, n in rows.all():
            counts[type_] += int(n or 0)
    for lo, hi in edges:
        where = _conditions(account_id, EventFilter(types=_RATE_TYPES, domain=domain, start=lo, end=hi))
        rows = await session.execute(select(Event.type, func.count()).where(*where).group_by(Event.type))
        for type_, n in rows.all():
            counts[type_] += int(n)
    return Rates(**counts)


async def rates(session: AsyncSession, account_id: str, domain: str | None = None,
                now: datetime | None = None) -> dict[str, Rates]:
    """The account's rates over each of RATE_WINDOWS ending ``now`` (default: the current time)."""
    end = now or datetime.now(UTC)
    return {name: await window_rates(session, account_id, end - span, end, domain)
            for name, span in RATE_WINDOWS.items()}


@dataclass(frozen=True)
class DomainRates:
    """One account's (``domain`` '': all its mail) or one of its sending domains' rates of a window."""

    account_id: str
    domain: str
    rates: Rates


async def active_senders(session: AsyncSession, since: date) -> list[tuple[str, str]]:
    """(account id, sending domain; '' for all of the account's mail) of every account that had a
    delivery outcome on or after the UTC day ``since``: read from event_counts, a few rows per account
    and day."""
    rows = await session.execute(
        select(EventCount.account_id, EventCount.domain).where(
            EventCount.day >= since, EventCount.tag == "", EventCount.type.in_(_RATE_TYPES), EventCount.n > 0)
        .distinct())
    return [(a, d) for a, d in rows.all()]


async def all_rates(session: AsyncSession, span: timedelta, now: datetime | None = None,
                    ) -> list[DomainRates]:
    """Every active account's rates over the last ``span``, for all its mail and per sending domain
    (the recorder's gauges and the automatic bulk pause)."""
    end = now or datetime.now(UTC)
    start = end - span
    out = []
    for account_id, domain in await active_senders(session, start.date()):
        out.append(DomainRates(account_id, domain,
                               await window_rates(session, account_id, start, end, domain or None)))
    return out
