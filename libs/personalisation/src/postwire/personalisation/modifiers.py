"""The modifiers (``{$x|name:arg:arg}``): what each does, as SMART-TPL and Smarty define it.

Each takes the value, its evaluated arguments and the render's :class:`Budget`: work proportional to a
value's length is charged (:meth:`Budget.charge_chars`), and a modifier that can multiply a value's
length (replace, regex_replace, date_format) checks the result's size before building it. An unknown
modifier does nothing, as on SMTPeter: :func:`bind` returns None and the compiler leaves it out.
"""

from __future__ import annotations

import base64
import calendar
import functools
import hashlib
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote_plus

import re2

from postwire.personalisation.errors import RenderError
from postwire.personalisation.limits import Budget
from postwire.personalisation.values import to_int, to_str, truthy

Apply = Callable[[Any, list[Any], Budget], Any]

NOT_CONSTANT = object()  # an argument whose value is only known at render time


class ModifierError(Exception):
    """A modifier's literal argument is wrong (an invalid regex): a syntax error of the template."""


def text(value: Any, budget: Budget) -> str:
    """The value as text, charging the work of reading it."""
    string = to_str(value)
    budget.charge_chars(len(string))
    return string


def arg(args: list[Any], index: int, default: Any) -> Any:
    return args[index] if len(args) > index else default


# escaping
_HTML = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#039;"})


def escape_html(string: str) -> str:
    return string.translate(_HTML)


def escape_url(string: str) -> str:
    """PHP's urlencode: letters, digits and ``-_.`` stay, a space is ``+``, the rest is %XX of UTF-8."""
    return quote_plus(string, safe="", errors="surrogatepass").replace("~", "%7E")


def escape_base64(string: str) -> str:
    return base64.b64encode(string.encode("utf-8", "surrogatepass")).decode("ascii")


ESCAPERS: dict[str, Callable[[str], str]] = {"html": escape_html, "url": escape_url, "base64": escape_base64}


def escape(value: Any, args: list[Any], budget: Budget) -> Any:
    how = to_str(arg(args, 0, "html")).lower()
    escaper = ESCAPERS.get(how)
    string = text(value, budget)
    return escaper(string) if escaper is not None else string


def urlencode(value: Any, args: list[Any], budget: Budget) -> Any:
    return escape_url(text(value, budget))


def base64_encode(value: Any, args: list[Any], budget: Budget) -> Any:
    return escape_base64(text(value, budget))


def base64_decode(value: Any, args: list[Any], budget: Budget) -> Any:
    string = text(value, budget)
    try:
        return base64.b64decode(string, validate=True).decode("utf-8", "replace")
    except ValueError:
        return string


# text
def default(value: Any, args: list[Any], budget: Budget) -> Any:
    return arg(args, 0, value) if to_str(value) == "" else value


def upper(value: Any, args: list[Any], budget: Budget) -> Any:
    return text(value, budget).upper()


def lower(value: Any, args: list[Any], budget: Budget) -> Any:
    return text(value, budget).lower()


def ucfirst(value: Any, args: list[Any], budget: Budget) -> Any:
    string = text(value, budget)
    return string[:1].upper() + string[1:]


def trim(value: Any, args: list[Any], budget: Budget) -> Any:
    return text(value, budget).strip(to_str(arg(args, 0, " \t\n\r\0\x0b")))


_NEWLINE = re.compile(r"\r\n|\n\r|\n|\r")


def nl2br(value: Any, args: list[Any], budget: Budget) -> Any:
    """PHP's nl2br: ``<br />`` before each line break, which stays."""
    return _NEWLINE.sub(lambda m: "<br />" + m.group(), text(value, budget))


def truncate(value: Any, args: list[Any], budget: Budget) -> Any:
    """Smarty's truncate:length:etc:break_words:middle (80, "...", false, false). Longer text is cut
    to ``length`` characters including ``etc``; unless ``break_words``, a word cut in two is dropped."""
    string = text(value, budget)
    length = to_int(arg(args, 0, 80), 80)
    etc = to_str(arg(args, 1, "..."))
    if length <= 0:
        return ""
    if len(string) <= length:
        return string
    length -= min(length, len(etc))
    if truthy(arg(args, 3, False)):
        half = length // 2
        return string[:half] + etc + string[len(string) - half :]
    if not truthy(arg(args, 2, False)):
        # Smarty: preg_replace('/\s+?(\S+)?$/', '', substr($string, 0, $length + 1))
        head = string[: length + 1]
        cut = len(head)
        while cut > 0 and not head[cut - 1].isspace():
            cut -= 1
        if cut > 0:
            while cut > 0 and head[cut - 1].isspace():
                cut -= 1
            head = head[:cut]
        string = head
    return string[:length] + etc


def replace(value: Any, args: list[Any], budget: Budget) -> Any:
    string = text(value, budget)
    if len(args) < 2:
        return string
    search, replacement = to_str(args[0]), to_str(args[1])
    if not search:
        return string
    grown = len(string) + string.count(search) * (len(replacement) - len(search))
    if grown > budget.max_value:
        too_long(budget)
    budget.charge_chars(grown)
    return string.replace(search, replacement)


def too_long(budget: Budget) -> None:
    raise RenderError(f"a value grew longer than {budget.max_value} characters")


def cat(value: Any, args: list[Any], budget: Budget) -> Any:
    parts = [to_str(value), *(to_str(a) for a in args)]
    size = sum(len(p) for p in parts)
    if size > budget.max_value:
        too_long(budget)
    budget.charge_chars(size)
    return "".join(parts)


# counting and hashing
def count(value: Any, args: list[Any], budget: Budget) -> Any:
    """Members of a list or mapping; 0 for anything else."""
    return len(value) if isinstance(value, (list, tuple, Mapping)) else 0


def strlen(value: Any, args: list[Any], budget: Budget) -> Any:
    return len(to_str(value))


def _digest(name: str) -> Apply:
    def apply(value: Any, args: list[Any], budget: Budget) -> Any:
        return hashlib.new(name, text(value, budget).encode("utf-8", "surrogatepass")).hexdigest()

    return apply


# regular expressions: RE2 runs in time linear in the text, whatever the pattern
_SURROGATE = re.compile("[\ud800-\udfff]")
_GROUP_REFERENCE = re.compile(r"\$\{(\d{1,2})\}|\$(\d{1,2})|\\(\d{1,2})")

Replacement = list[str | int]  # literal text and group numbers


def parse_replacement(template: str) -> Replacement:
    """``$1``, ``${1}`` and ``\\1`` name a group, as in PHP's preg_replace."""
    parts: Replacement = []
    pos = 0
    for match in _GROUP_REFERENCE.finditer(template):
        if match.start() > pos:
            parts.append(template[pos : match.start()])
        parts.append(int(next(g for g in match.groups() if g is not None)))
        pos = match.end()
    if pos < len(template):
        parts.append(template[pos:])
    return parts


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a customer's bad pattern is their error, not a line on our stderr


@functools.lru_cache(maxsize=256)
def compile_regex(pattern: str) -> Any:
    """RE2-compiled ``pattern``; raises ``re2.error`` when it is not a valid (RE2) regular expression."""
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS)
    except UnicodeEncodeError:
        raise re2.error(b"a lone surrogate is not text") from None


def utf8_safe(string: str) -> str:
    """RE2 reads UTF-8: a lone surrogate (JSON can carry one, no mail can) becomes U+FFFD."""
    try:
        string.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", string)
    return string


def regex_problem(exc: Exception) -> str:
    reason = exc.args[0] if exc.args else "invalid"
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)


def regex_sub(regex: Any, replacement: Replacement, string: str, budget: Budget) -> str:
    string = utf8_safe(string)
    out: list[str] = []
    size = 0
    pos = 0
    groups = regex.groups
    for match in regex.finditer(string):
        budget.charge(1)
        piece = [string[pos : match.start()]]
        for part in replacement:
            if isinstance(part, str):
                piece.append(part)
            elif part <= groups:
                piece.append(match.group(part) or "")
        size += sum(len(p) for p in piece)
        if size > budget.max_value:
            too_long(budget)
        out.extend(piece)
        pos = match.end()
    out.append(string[pos:])
    if size + len(string) - pos > budget.max_value:
        too_long(budget)
    return "".join(out)


def regex_replace(value: Any, args: list[Any], budget: Budget) -> Any:
    """regex_replace:pattern:replacement. A pattern known only at render time that is not valid leaves
    the value as it is, as SMART-TPL does; a literal one is checked when the template is compiled."""
    string = text(value, budget)
    if len(args) < 2:
        return string
    try:
        regex = compile_regex(to_str(args[0]))
    except re2.error:
        return string
    return regex_sub(regex, parse_replacement(to_str(args[1])), string, budget)


def bind_regex_replace(constants: list[Any]) -> Apply:
    pattern = constants[0] if constants else NOT_CONSTANT
    if pattern is NOT_CONSTANT or len(constants) < 2:
        return regex_replace
    try:
        regex = compile_regex(to_str(pattern))
    except re2.error as exc:
        raise ModifierError(f"invalid regular expression in regex_replace: {regex_problem(exc)}") from None
    if constants[1] is NOT_CONSTANT:
        return lambda value, args, budget: regex_sub(
            regex, parse_replacement(to_str(args[1])), text(value, budget), budget
        )
    fixed = parse_replacement(to_str(constants[1]))
    return lambda value, args, budget: regex_sub(regex, fixed, text(value, budget), budget)


# dates
_RELATIVE = re.compile(r"([+-])\s*(\d{1,9})\s*(second|minute|hour|day|week|month|year)s?", re.IGNORECASE)
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
DEFAULT_DATE_FORMAT = "%b %e, %Y"


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def moment_of(value: Any) -> datetime | None:
    """A unix timestamp, an ISO-8601 date/time (naive means UTC), an RFC 2822 date, "now", "today",
    "tomorrow", "yesterday" or "+3 days"-style offsets from now; None when it is none of these."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        string = to_str(value).strip()
        if re.fullmatch(r"-?\d{1,15}", string):
            return datetime.fromtimestamp(int(string), UTC)
        word = string.lower()
        now = datetime.now(UTC)
        if word == "now":
            return now
        if word in ("today", "tomorrow", "yesterday"):
            return now + timedelta(days={"today": 0, "tomorrow": 1, "yesterday": -1}[word])
        relative = _RELATIVE.fullmatch(string)
        if relative is not None:
            amount = int(relative.group(2)) * (-1 if relative.group(1) == "-" else 1)
            unit = relative.group(3).lower()
            if unit == "month":
                return _add_months(now, amount)
            if unit == "year":
                return _add_months(now, amount * 12)
            return now + timedelta(seconds=amount * _SECONDS[unit])
        try:
            return datetime.fromisoformat(string)
        except ValueError:
            pass
        try:
            return parsedate_to_datetime(string)
        except (ValueError, TypeError, IndexError):
            return None
    except (OverflowError, OSError, ValueError):
        return None


def date_format(value: Any, args: list[Any], budget: Budget) -> Any:
    """date_format:format (strftime, default "%b %e, %Y"). Empty input gives empty output; input that
    is not a date is left as it is."""
    string = to_str(value)
    if string.strip() == "" and not isinstance(value, (int, float)):
        return ""
    moment = moment_of(value)
    if moment is None:
        return string
    fmt = to_str(arg(args, 0, DEFAULT_DATE_FORMAT))
    if len(fmt) * 32 > budget.max_value:  # a directive expands to a few dozen characters at most
        too_long(budget)
    budget.charge_chars(len(fmt))
    try:
        return moment.strftime(fmt)
    except (ValueError, OverflowError, UnicodeError):
        return string


MODIFIERS: dict[str, Apply] = {
    "default": default,
    "escape": escape,
    "truncate": truncate,
    "upper": upper,
    "toupper": upper,
    "lower": lower,
    "tolower": lower,
    "ucfirst": ucfirst,
    "trim": trim,
    "replace": replace,
    "regex_replace": regex_replace,
    "nl2br": nl2br,
    "count": count,
    "strlen": strlen,
    "cat": cat,
    "urlencode": urlencode,
    "base64_encode": base64_encode,
    "base64_decode": base64_decode,
    "md5": _digest("md5"),
    "sha1": _digest("sha1"),
    "sha256": _digest("sha256"),
    "date_format": date_format,
}


def bind(name: str, constants: list[Any]) -> Apply | None:
    """The function of modifier ``name``, given its arguments' values where they are literals
    (:data:`NOT_CONSTANT` elsewhere); None for an unknown modifier. Raises :class:`ModifierError` for a
    literal argument that can never work."""
    if name == "regex_replace":
        return bind_regex_replace(constants)
    return MODIFIERS.get(name)
