"""The parsed template: a tree of statements and expressions, as the parser builds it and the compiler
(:mod:`postwire.personalisation.render`) turns it into closures once. ``offset`` is where the node's tag
or operator starts in the source, for error messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


# expressions
@dataclass(frozen=True, slots=True)
class Const:
    value: Any


@dataclass(frozen=True, slots=True)
class Var:
    name: str


@dataclass(frozen=True, slots=True)
class Member:
    """``obj.name``, ``obj[key]``."""

    obj: Expr
    key: Expr


@dataclass(frozen=True, slots=True)
class Modify:
    """``expr|name:arg:arg``."""

    expr: Expr
    name: str
    args: tuple[Expr, ...]
    offset: int


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "not" or "-"
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # canonical: or and == != < <= > >= + - * / %
    left: Expr
    right: Expr
    offset: int


Expr = Const | Var | Member | Modify | Unary | Binary


# statements
@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Output:
    expr: Expr


@dataclass(frozen=True, slots=True)
class If:
    branches: tuple[tuple[Expr, Block], ...]  # {if} and each {elseif}
    orelse: Block


@dataclass(frozen=True, slots=True)
class Foreach:
    source: Expr
    key: str | None
    value: str
    body: Block
    orelse: Block


@dataclass(frozen=True, slots=True)
class Assign:
    name: str
    expr: Expr


Stmt = Text | Output | If | Foreach | Assign
Block = tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class Document:
    body: Block
    escape: str | None  # {escape} / {mode=…}: every {$…} output is escaped this way
