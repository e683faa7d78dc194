"""Compile once, render many: the parsed tree becomes nested Python closures when the template is
compiled, so a render only calls them; nothing is parsed, looked up by name or generated as source per
recipient (no eval, exec or compile).

A render's state is its data (read only), the variables the template assigned and its loops' variables
(``local``), and its :class:`~postwire.personalisation.limits.Budget`. Each block charges its
statements' fixed cost (one step per statement plus one per operator, value and modifier in it) as it
starts, each loop iteration one step more, modifiers the length of what they read; text and output
charge the output size. The tree's depth is bounded by the parser, so is the closures' recursion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from postwire.personalisation import modifiers
from postwire.personalisation.errors import RenderError, TemplateSyntaxError
from postwire.personalisation.lexer import position, syntax_error
from postwire.personalisation.limits import DEFAULT_LIMITS, Budget, Limits
from postwire.personalisation.nodes import (
    Assign,
    Binary,
    Block,
    Const,
    Document,
    Expr,
    Foreach,
    If,
    Member,
    Modify,
    Output,
    Stmt,
    Text,
    Unary,
    Var,
)
from postwire.personalisation.parser import parse
from postwire.personalisation.values import compare, equals, member, normalize, to_number, to_str, truthy


class State:
    __slots__ = ("budget", "data", "local")

    def __init__(self, data: Mapping[str, Any], budget: Budget) -> None:
        self.data = data
        self.local: dict[str, Any] = {}
        self.budget = budget


Eval = Callable[[State], Any]
Run = Callable[[State, list[str]], None]

_MISSING = object()


def weight(expr: Expr) -> int:
    """Steps one evaluation of ``expr`` is charged: one per node."""
    if isinstance(expr, (Const, Var)):
        return 1
    if isinstance(expr, Member):
        return 1 + weight(expr.obj) + weight(expr.key)
    if isinstance(expr, Modify):
        return 1 + weight(expr.expr) + sum(weight(a) for a in expr.args)
    if isinstance(expr, Unary):
        return 1 + weight(expr.operand)
    return 1 + weight(expr.left) + weight(expr.right)


class Compiler:
    def __init__(self, source: str, part: str, document: Document) -> None:
        self.source = source
        self.part = part
        self.escape = modifiers.ESCAPERS.get(document.escape) if document.escape else None
        self.written = written_names(document.body)

    def line(self, offset: int) -> int:
        return position(self.source, offset)[0]

    # expressions
    def expr(self, node: Expr) -> Eval:
        if isinstance(node, Const):
            value = node.value
            return lambda st: value
        if isinstance(node, Var):
            return self.var(node.name)
        if isinstance(node, Member):
            return self.member(node)
        if isinstance(node, Modify):
            return self.modify(node)
        if isinstance(node, Unary):
            operand = self.expr(node.operand)
            if node.op == "not":
                return lambda st: not truthy(operand(st))
            return lambda st: normalize(-to_number(operand(st)))
        return self.binary(node)

    def var(self, name: str) -> Eval:
        if name not in self.written:
            return lambda st: st.data.get(name)

        def lookup(st: State) -> Any:
            value = st.local.get(name, _MISSING)
            return st.data.get(name) if value is _MISSING else value

        return lookup

    def member(self, node: Member) -> Eval:
        obj = self.expr(node.obj)
        if isinstance(node.key, Const):
            key = node.key.value

            def constant_member(st: State) -> Any:
                container = obj(st)
                if type(container) is dict and type(key) is str:
                    return container.get(key)
                return member(container, key)

            return constant_member
        key_of = self.expr(node.key)
        return lambda st: member(obj(st), key_of(st))

    def modify(self, node: Modify) -> Eval:
        inner = self.expr(node.expr)
        constants = [a.value if isinstance(a, Const) else modifiers.NOT_CONSTANT for a in node.args]
        try:
            apply = modifiers.bind(node.name, constants)
        except modifiers.ModifierError as exc:
            raise syntax_error(self.source, self.part, node.offset, str(exc)) from None
        if apply is None:  # unknown modifier: the value passes through, as on SMTPeter
            return inner
        args = [self.expr(a) for a in node.args]

        def modified(st: State) -> Any:
            result = apply(inner(st), [a(st) for a in args], st.budget)
            if type(result) is str and len(result) > st.budget.max_value:
                modifiers.too_long(st.budget)
            return result

        return modified

    def binary(self, node: Binary) -> Eval:
        left, right, op = self.expr(node.left), self.expr(node.right), node.op
        if op == "and":
            return lambda st: truthy(left(st)) and truthy(right(st))
        if op == "or":
            return lambda st: truthy(left(st)) or truthy(right(st))
        if op == "==":
            return lambda st: equals(left(st), right(st))
        if op == "!=":
            return lambda st: not equals(left(st), right(st))
        if op in ("<", "<=", ">", ">="):
            return lambda st: compare(op, left(st), right(st))
        if op == "+":
            return lambda st: normalize(to_number(left(st)) + to_number(right(st)))
        if op == "-":
            return lambda st: normalize(to_number(left(st)) - to_number(right(st)))
        if op == "*":
            return lambda st: normalize(to_number(left(st)) * to_number(right(st)))
        line = self.line(node.offset)
        if op == "/":
            return lambda st: divide(to_number(left(st)), to_number(right(st)), line)
        return lambda st: modulo(to_number(left(st)), to_number(right(st)), line)

    # statements
    def block(self, stmts: Block) -> Run:
        runs = [self.stmt(s) for s in stmts]
        cost = sum(stmt_weight(s) for s in stmts)
        if len(runs) == 1:
            only = runs[0]

            def run_one(st: State, out: list[str]) -> None:
                st.budget.charge(cost)
                only(st, out)

            return run_one

        def run_block(st: State, out: list[str]) -> None:
            st.budget.charge(cost)
            for run in runs:
                run(st, out)

        return run_block

    def stmt(self, node: Stmt) -> Run:
        if isinstance(node, Text):
            return self.text(node.text)
        if isinstance(node, Output):
            return self.output(node)
        if isinstance(node, If):
            return self.if_(node)
        if isinstance(node, Foreach):
            return self.foreach(node)
        return self.assign(node)

    def text(self, text: str) -> Run:
        size = len(text)

        def run_text(st: State, out: list[str]) -> None:
            st.budget.output(size)
            out.append(text)

        return run_text

    def output(self, node: Output) -> Run:
        value = self.expr(node.expr)
        escape = self.escape

        def run_output(st: State, out: list[str]) -> None:
            string = to_str(value(st))
            if escape is not None:
                string = escape(string)
            st.budget.output(len(string))
            out.append(string)

        return run_output

    def if_(self, node: If) -> Run:
        branches = [(self.expr(cond), self.block(body), weight(cond)) for cond, body in node.branches]
        orelse = self.block(node.orelse)
        first, rest = branches[0], branches[1:]

        def run_if(st: State, out: list[str]) -> None:
            if truthy(first[0](st)):  # its condition is in the statement's own weight
                first[1](st, out)
                return
            for cond, body, cost in rest:
                st.budget.charge(cost)
                if truthy(cond(st)):
                    body(st, out)
                    return
            orelse(st, out)

        return run_if

    def foreach(self, node: Foreach) -> Run:
        source = self.expr(node.source)
        body, orelse = self.block(node.body), self.block(node.orelse)
        key_name, value_name = node.key, node.value

        def run_foreach(st: State, out: list[str]) -> None:
            items = source(st)
            pairs: Any
            if isinstance(items, Mapping):
                pairs = items.items()
            elif isinstance(items, (list, tuple)):
                pairs = enumerate(items)
            else:
                pairs = ()
            budget, local = st.budget, st.local
            empty = True
            for key, value in pairs:
                empty = False
                budget.charge(1)
                local[value_name] = value
                if key_name is not None:
                    local[key_name] = key
                body(st, out)
            if empty:
                orelse(st, out)

        return run_foreach

    def assign(self, node: Assign) -> Run:
        value, name = self.expr(node.expr), node.name

        def run_assign(st: State, out: list[str]) -> None:
            result = value(st)
            if type(result) is str:
                st.budget.value(result)
            st.local[name] = result

        return run_assign


def stmt_weight(node: Stmt) -> int:
    if isinstance(node, Output):
        return 1 + weight(node.expr)
    if isinstance(node, Assign):
        return 1 + weight(node.expr)
    if isinstance(node, If):
        return 1 + weight(node.branches[0][0])
    if isinstance(node, Foreach):
        return 1 + weight(node.source)
    return 1


def written_names(stmts: Block) -> set[str]:
    """Variables the template itself sets ({assign}, loop variables): only these are looked up in the
    render's own variables before the data."""
    names: set[str] = set()
    pending = [stmts]
    while pending:
        for node in pending.pop():
            if isinstance(node, Assign):
                names.add(node.name)
            elif isinstance(node, Foreach):
                names.add(node.value)
                if node.key is not None:
                    names.add(node.key)
                pending += [node.body, node.orelse]
            elif isinstance(node, If):
                pending += [body for _, body in node.branches]
                pending.append(node.orelse)
    return names


def divide(left: int | float, right: int | float, line: int) -> int | float:
    if right == 0:
        raise RenderError("division by zero", line=line)
    if isinstance(left, int) and isinstance(right, int) and left % right == 0:
        return normalize(left // right)
    return left / right


def modulo(left: int | float, right: int | float, line: int) -> int | float:
    """PHP's %: both sides as integers, the result has the sign of the left side."""
    try:
        a, b = int(left), int(right)
    except (OverflowError, ValueError):  # inf, nan
        return float("nan")
    if b == 0:
        raise RenderError("modulo by zero", line=line)
    result = abs(a) % abs(b)
    return normalize(-result if a < 0 else result)


class Template:
    """A compiled template: render it once per recipient. Immutable and safe to share between threads;
    each render keeps its own state."""

    __slots__ = ("_run", "_text", "part")

    def __init__(self, source: str, *, part: str = "template") -> None:
        self.part = part
        document = parse(source, part)
        body = document.body
        # plain text (or text with comments only) needs no closures at all
        self._text: str | None = None
        if not body:
            self._text = ""
        elif len(body) == 1 and isinstance(body[0], Text):
            self._text = body[0].text
        self._run = Compiler(source, part, document).block(body)

    def render(self, data: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> str:
        """The template with ``data`` filled in. Raises :class:`RenderError` when this render goes over
        ``limits`` or its data makes an operation fail (division by zero)."""
        if self._text is not None:
            if len(self._text) > limits.max_output:
                raise RenderError(f"the output is longer than {limits.max_output} characters")
            return self._text
        out: list[str] = []
        self._run(State(data, Budget(limits)), out)
        return "".join(out)


def compile_template(source: str, *, part: str = "template") -> Template:
    """Parse and compile ``source`` once. Raises :class:`TemplateSyntaxError` naming ``part``, the line
    and the column of the first error."""
    return Template(source, part=part)


__all__ = ["Template", "TemplateSyntaxError", "compile_template"]
