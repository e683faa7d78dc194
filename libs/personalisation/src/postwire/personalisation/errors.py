"""The two ways a template fails: at compile time (the customer's template is wrong: answer 422 naming the
line) and at render time (one recipient's render went over a limit, or its data made it fail)."""

from __future__ import annotations

from typing import Any


class TemplateSyntaxError(Exception):
    """The template cannot be compiled. ``part`` names the template (``"html"``, ``"text"``, ``"subject"``
    as the caller chose), ``line`` and ``column`` count from 1, ``message`` says what is wrong in the
    customer's terms ("{if} without {/if}", "unknown tag {foo}", "unterminated string")."""

    def __init__(self, message: str, *, part: str = "template", line: int = 1, column: int = 1) -> None:
        super().__init__(message, part, line, column)
        self.message = message
        self.part = part
        self.line = line
        self.column = column

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only fields: pickle (to another process) by hand
        return _syntax_error, (self.message, self.part, self.line, self.column)


class RenderError(Exception):
    """One render failed: it went over a :class:`~postwire.personalisation.limits.Limits` bound, or an
    operation on this recipient's data had no result (division by zero). Other recipients of the same
    template may render fine, so the caller decides per recipient. ``line`` is the template line of the
    failing tag when one is to blame, else ``None``."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message, line)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return self.message if self.line is None else f"line {self.line}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return _render_error, (self.message, self.line)


def _syntax_error(message: str, part: str, line: int, column: int) -> TemplateSyntaxError:
    return TemplateSyntaxError(message, part=part, line=line, column=column)


def _render_error(message: str, line: int | None) -> RenderError:
    return RenderError(message, line=line)
