"""Traffic shaping rules as data: a YAML file → frozen pydantic models (STYLE P11).

The file has a ``default`` rule and ``providers``, each a rule with ``match`` patterns on MX host names
(shell globs, ``*.google.com``). A provider's rule is the default rule with the provider's keys laid over
it, so the file only says what differs; its ``backoff.throttle_patterns`` are *added* to the default's
(a 421 means "slow down" whoever says it). A provider is chosen by the first provider, in file order,
with a pattern matching the MX host; no match → ``default``.

The shipped rules are ``shaping.yaml`` next to this module, the one copy in the repository: it is
package data, so the wheel, every image and the local run carry it, and the Helm chart's ConfigMap is
made from it through a link (charts/postwire/files/shaping.yaml). ``POSTWIRE_SHAPING_FILE`` points at
another file. Any error — unreadable file, bad YAML,
unknown key, bad rate — raises :class:`ShapingError` at boot, naming the file and the field.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator

DEFAULT = "default"
SHIPPED_NAME = "shaping.yaml"
STANDARD_THROTTLE_PATTERNS = (r"^421\b", r"^4\d\d[ -]4\.7\.\d+")

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hr|hour|d|day)\s*$", re.I)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.I)
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0,
        "hr": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ShapingError(ValueError):
    """The shaping rules cannot be used; the message names the file and what is wrong."""


def parse_rate(value: Any) -> float | None:
    """``"100/s"``, ``"3000/m"``, ``"36000/h"`` → messages per second; ``None``/``"unlimited"`` → None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "unlimited")):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    else:
        match = _RATE.match(str(value))
        if not match:
            raise ValueError(f"rate {value!r} is not like '100/s', '3000/m' or '36000/h'")
        rate = float(match.group(1)) / _PER[match.group(2).lower()]
    if rate <= 0:
        raise ValueError(f"rate {value!r} must be positive")
    return rate


def parse_duration(value: Any) -> float:
    """``300``, ``"300s"``, ``"5m"``, ``"2h"`` → seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"duration {value!r} is not like '30s', '5m' or '2h'")
        seconds = float(match.group(1)) * _UNIT[(match.group(2) or "s").lower()]
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return seconds


class Backoff(BaseModel):
    """How a provider's budget shrinks on throttling replies and grows back.

    A reply whose full text ("421 4.7.28 ...") matches a pattern cuts the budget one level: rate and
    connections times ``factor`` (connections never below 1), down to ``max_level`` cuts. Replies within
    ``settle`` seconds of a cut do not cut again (they come from sessions that were already in flight),
    but they do restart the clock. ``duration`` after the last throttling reply the budget recovers one
    level, then one more every ``recovery_step``, until it is back at the configured values.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # a rules file that says nothing still backs off on the standard signals: 421 and 4.7.x
    throttle_patterns: tuple[str, ...] = STANDARD_THROTTLE_PATTERNS
    factor: float = Field(default=0.5, gt=0, lt=1)
    duration: float = 300.0
    recovery_step: float = 60.0
    settle: float = 5.0
    max_level: PositiveInt = 5

    @field_validator("duration", "recovery_step", "settle", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("throttle_patterns")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"throttle pattern {pattern!r}: {e}") from e
        return patterns

    @functools.cached_property
    def _regexes(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p) for p in self.throttle_patterns)

    def matches(self, reply_text: str) -> bool:
        return any(r.search(reply_text) for r in self._regexes)


class Rule(BaseModel):
    """Limits for one provider (or the default): they hold across every domain it serves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    match: tuple[str, ...] = ()
    max_connections: PositiveInt = 10
    max_messages_per_connection: PositiveInt = 100
    # messages per second (parsed from "100/s" etc.); None = unpaced
    message_rate: float | None = None
    # new connections per second; None = unpaced
    connection_rate: float | None = None
    tls: Literal["optional", "required"] = "optional"
    tls_verify: bool = False
    backoff: Backoff = Backoff()

    @field_validator("message_rate", "connection_rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> float | None:
        return parse_rate(value)

    @field_validator("match")
    @classmethod
    def _lower(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(p.strip().lower().rstrip(".") for p in patterns)


class ShapingRules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    default: Rule
    providers: dict[str, Rule] = {}

    @field_validator("providers")
    @classmethod
    def _named(cls, providers: dict[str, Rule]) -> dict[str, Rule]:
        for name, rule in providers.items():
            if name == DEFAULT or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
                raise ValueError(f"provider name {name!r}: use lower-case letters, digits, '-', '_' "
                                 f"(and not {DEFAULT!r})")
            if not rule.match:
                raise ValueError(f"provider {name!r} has no match patterns")
        return providers

    def rule(self, provider: str) -> Rule:
        return self.providers.get(provider, self.default)

    def provider_for(self, mx_host: str) -> str:
        """The provider whose pattern first matches ``mx_host`` (file order), else ``default``."""
        return _provider_for(self, mx_host.lower().rstrip("."))

    def __hash__(self) -> int:  # frozen and used as an lru_cache key
        return id(self)


@functools.lru_cache(maxsize=65_536)
def _provider_for(rules: ShapingRules, mx_host: str) -> str:
    for name, rule in rules.providers.items():
        if any(fnmatch.fnmatchcase(mx_host, pattern) for pattern in rule.match):
            return name
    return DEFAULT


def shipped_rules_path() -> Path:
    """The shipped rules: package data, so found wherever the dispatcher is installed."""
    return Path(str(resources.files("postwire.dispatcher") / SHIPPED_NAME))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``; nested mappings merge, throttle patterns add up."""
    merged = dict(base)
    for key, value in over.items():
        if key == "throttle_patterns" and isinstance(value, list):
            merged[key] = [*base.get(key, []), *value]
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value)
        else:
            merged[key] = value
    return merged


def parse_rules(data: Any) -> ShapingRules:
    """A parsed YAML document → rules (providers inherit the default rule). Raises ValueError."""
    if not isinstance(data, dict) or not isinstance(data.get(DEFAULT), dict):
        raise ValueError("the document must be a mapping with a 'default' rule")
    default = data[DEFAULT]
    providers = data.get("providers") or {}
    if not isinstance(providers, dict) or not all(isinstance(v, dict) for v in providers.values()):
        raise ValueError("'providers' must map provider names to rules")
    inherited = {k: v for k, v in default.items() if k != "match"}
    return ShapingRules.model_validate({
        **{k: v for k, v in data.items() if k not in (DEFAULT, "providers")},
        DEFAULT: default,
        "providers": {name: _merge(inherited, rule) for name, rule in providers.items()},
    })


def load_rules(path: Path | None = None) -> ShapingRules:
    """Read and validate a rules file (the shipped one when ``path`` is None)."""
    path = path or shipped_rules_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ShapingError(f"shaping rules {path}: cannot read: {e}") from e
    except yaml.YAMLError as e:
        raise ShapingError(f"shaping rules {path}: not valid YAML: {e}") from e
    try:
        return parse_rules(data)
    except ValidationError as e:
        raise ShapingError(f"shaping rules {path}: {e}") from e
    except ValueError as e:
        raise ShapingError(f"shaping rules {path}: {e}") from e
