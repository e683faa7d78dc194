"""How much one render may cost, so a hostile or mistaken template (or recipient data) ends in a
:class:`~postwire.personalisation.errors.RenderError` instead of hanging a worker or eating its memory.

Sizes are counted in characters of the Python string (a byte for ASCII text, up to four in UTF-8).
"""

from __future__ import annotations

from dataclasses import dataclass

from postwire.personalisation.errors import RenderError

# Tags nested inside tags ({if} in {foreach} …) plus brackets and prefix operators inside one tag. The
# parser and the renderer recurse per level, so this bounds their use of Python's stack: a template
# nested deeper is a TemplateSyntaxError, never a RecursionError.
MAX_DEPTH = 64

# One step per this many characters a modifier reads: hashing or rewriting a 1 MB value in a loop costs
# what it takes, so a loop over a big value stops as early as a loop over many small ones.
CHARS_PER_STEP = 256


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of one render. The defaults fit email: a message over 2 MB is already undeliverable to
    many receivers, and a million steps is far beyond any real template (a 10,000-row table in a
    loop uses tens of thousands)."""

    max_output: int = 2_000_000
    """Characters the render may produce."""
    max_steps: int = 1_000_000
    """Evaluation steps: each tag and text run executed, each operator and modifier evaluated, each
    loop iteration, and a step per 256 characters a modifier reads."""
    max_value: int = 1_000_000
    """Characters of one value built during the render (cat, replace, assign, …)."""


DEFAULT_LIMITS = Limits()


class Budget:
    """What is left of one render's :class:`Limits`; every evaluation charges it, and the charge that
    goes over raises :class:`RenderError` right there, so the work done is bounded by the limits and
    not by the template or the data."""

    __slots__ = ("max_output", "max_steps", "max_value", "size", "steps")

    def __init__(self, limits: Limits) -> None:
        self.steps = 0
        self.size = 0
        self.max_steps = limits.max_steps
        self.max_output = limits.max_output
        self.max_value = limits.max_value

    def charge(self, steps: int) -> None:
        self.steps += steps
        if self.steps > self.max_steps:
            raise RenderError(f"the template took more than {self.max_steps} steps (a loop too long?)")

    def charge_chars(self, chars: int) -> None:
        self.charge(1 + chars // CHARS_PER_STEP)

    def output(self, chars: int) -> None:
        self.size += chars
        if self.size > self.max_output:
            raise RenderError(f"the output is longer than {self.max_output} characters")

    def value(self, text: str) -> str:
        if len(text) > self.max_value:
            raise RenderError(f"a value grew longer than {self.max_value} characters")
        return text
