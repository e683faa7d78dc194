"""Tokens → :class:`~postwire.personalisation.nodes.Document`, by recursive descent.

Recursion is bounded by :data:`~postwire.personalisation.limits.MAX_DEPTH`: each block inside a block
and each bracket, index or prefix operator inside an expression is a level, and a template deeper than
that is a syntax error, so no input can exhaust Python's stack. Binary operators are read by precedence
climbing, a loop per level, so a long ``$a + $b + …`` chain costs no depth.

Precedence, loosest first (SMART-TPL's): ``or ||``, ``and &&``, ``not !``, ``== != <> eq ne neq``,
``< <= > >= lt le gt ge lte gte``, ``+ -``, ``* / % mod``, unary ``-``, then ``|modifier`` and member
access. ``not`` applies to a whole comparison: ``not $a == 1`` is ``not ($a == 1)``.
"""

from __future__ import annotations

from postwire.personalisation.errors import TemplateSyntaxError
from postwire.personalisation.lexer import Token, syntax_error, tokenize
from postwire.personalisation.limits import MAX_DEPTH
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

# operator as written → (canonical operator, precedence)
_BINARY = {
    "or": ("or", 1), "||": ("or", 1),
    "and": ("and", 2), "&&": ("and", 2),
    "==": ("==", 4), "eq": ("==", 4),
    "!=": ("!=", 4), "<>": ("!=", 4), "ne": ("!=", 4), "neq": ("!=", 4),
    "<": ("<", 5), "lt": ("<", 5), "<=": ("<=", 5), "le": ("<=", 5), "lte": ("<=", 5),
    ">": (">", 5), "gt": (">", 5), ">=": (">=", 5), "ge": (">=", 5), "gte": (">=", 5),
    "+": ("+", 6), "-": ("-", 6),
    "*": ("*", 7), "/": ("/", 7), "%": ("%", 7), "mod": ("%", 7),
}  # fmt: skip
_NOT_OPERAND = 4  # `not` takes a comparison, not just the next value
_CONSTANTS = {"true": True, "false": False, "null": None}
_ESCAPES = frozenset({"html", "url", "base64"})


def describe(tok: Token) -> str:
    if tok.kind == "END":
        return "the end of the tag"
    if tok.kind == "EOF":
        return "the end of the template"
    if tok.kind == "VAR":
        return f"${tok.value}"
    if tok.kind == "STR":
        return "a string"
    if tok.kind == "TAG":
        return f"{{{tok.value}}}"
    return repr(str(tok.value))


class Parser:
    def __init__(self, source: str, part: str) -> None:
        self.source = source
        self.part = part
        self.tokens = tokenize(source, part)
        self.ahead: list[Token] = []  # peeked, not yet consumed
        self.depth = 0

    # tokens
    def error(self, offset: int, message: str) -> TemplateSyntaxError:
        return syntax_error(self.source, self.part, offset, message)

    def peek(self, ahead: int = 0) -> Token:
        while len(self.ahead) <= ahead:
            if self.ahead and self.ahead[-1].kind == "EOF":
                return self.ahead[-1]
            self.ahead.append(next(self.tokens))
        return self.ahead[ahead]

    def next(self) -> Token:
        tok = self.peek()
        if tok.kind != "EOF":
            self.ahead.pop(0)
        return tok

    def skip(self, count: int) -> None:
        for _ in range(count):
            self.next()

    def is_op(self, tok: Token, *ops: str) -> bool:
        return tok.kind == "OP" and tok.value in ops

    def is_word(self, tok: Token, word: str) -> bool:
        return tok.kind == "NAME" and tok.value.lower() == word

    def expect_op(self, op: str, what: str) -> Token:
        tok = self.next()
        if not self.is_op(tok, op):
            raise self.error(tok.offset, f"expected {what}, found {describe(tok)}")
        return tok

    def expect_var(self, what: str) -> str:
        tok = self.next()
        if tok.kind != "VAR":
            raise self.error(tok.offset, f"expected {what} (a $variable), found {describe(tok)}")
        return str(tok.value)

    def expect_end(self, tag: Token) -> None:
        tok = self.next()
        if tok.kind != "END":
            shown = "{$…}" if tag.value == "expr" else f"{{{tag.value}}}"
            raise self.error(tok.offset, f"unexpected {describe(tok)} in {shown}")

    def enter(self, offset: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(offset, f"nested deeper than {MAX_DEPTH} levels")

    def leave(self) -> None:
        self.depth -= 1

    # statements
    def parse(self) -> Document:
        escape = None
        first = self.peek()
        if first.kind == "TAG" and first.value in ("escape", "mode"):
            self.next()
            escape = "html" if first.value == "escape" else self.mode(first)
        body, _ = self.block(None, None, frozenset())
        return Document(body, escape)

    def mode(self, tag: Token) -> str:
        self.expect_op("=", "'='")
        tok = self.next()
        name = str(tok.value).lower() if tok.kind in ("NAME", "STR") else ""
        if name not in _ESCAPES | {"raw", "none"}:
            raise self.error(tok.offset, f"unknown mode {describe(tok)}: html, url, base64 or raw")
        self.expect_end(tag)
        return "" if name in ("raw", "none") else name

    def block(self, opener: Token | None, clause: Token | None, ends: frozenset[str]) -> tuple[Block, Token]:
        """Statements up to one of the tags in ``ends`` (returned too); ``opener`` is the {if} or
        {foreach} this block belongs to, ``clause`` the tag that started this part of it."""
        if opener is not None:
            self.enter(opener.offset)
        stmts: list[Stmt] = []
        while True:
            tok = self.next()
            if tok.kind == "TEXT":
                stmts.append(Text(tok.value))
                continue
            if tok.kind == "EOF":
                if opener is None:
                    return tuple(stmts), tok
                raise self.error(opener.offset, f"{{{opener.value}}} without {{/{opener.value}}}")
            name = tok.value
            if name in ends:
                if opener is not None:
                    self.leave()
                return tuple(stmts), tok
            if name == "expr":
                stmts.append(self.expr_tag(tok))
            elif name == "if":
                stmts.append(self.if_tag(tok))
            elif name == "foreach":
                stmts.append(self.foreach_tag(tok))
            elif name == "assign":
                stmts.append(self.assign_tag(tok))
            else:
                raise self.misplaced(tok, clause)

    def misplaced(self, tok: Token, clause: Token | None) -> TemplateSyntaxError:
        name = tok.value
        if name in ("escape", "mode"):
            return self.error(tok.offset, f"{{{name}}} must be the first thing in the template")
        if name in ("else", "elseif") and clause is not None and clause.value == "else":
            return self.error(tok.offset, f"{{{name}}} after the {{else}} of this {{if}}")
        if name == "foreachelse" and clause is not None and clause.value == "foreachelse":
            return self.error(tok.offset, "a second {foreachelse} in one {foreach}")
        owner = "foreach" if name in ("foreachelse", "/foreach") else "if"
        return self.error(tok.offset, f"{{{name}}} without {{{owner}}}")

    def expr_tag(self, tag: Token) -> Stmt:
        first, second = self.peek(), self.peek(1)
        if first.kind == "VAR" and self.is_op(second, "="):
            self.skip(2)
            value = self.expr()
            self.expect_end(tag)
            return Assign(str(first.value), value)
        expr = self.expr()
        self.expect_end(tag)
        return Output(expr)

    def if_tag(self, tag: Token) -> If:
        cond = self.expr()
        self.expect_end(tag)
        ends = frozenset({"elseif", "else", "/if"})
        body, end = self.block(tag, tag, ends)
        branches = [(cond, body)]
        while end.value == "elseif":
            cond = self.expr()
            self.expect_end(end)
            body, following = self.block(tag, end, ends)
            branches.append((cond, body))
            end = following
        orelse: Block = ()
        if end.value == "else":
            orelse, _ = self.block(tag, end, frozenset({"/if"}))
        return If(tuple(branches), orelse)

    def foreach_tag(self, tag: Token) -> Foreach:
        key = None
        if self.peek().kind == "VAR" and self.is_word(self.peek(1), "in"):
            value = str(self.next().value)
            self.next()
            source = self.expr()
        else:
            source = self.expr()
            tok = self.next()
            if not self.is_word(tok, "as"):
                raise self.error(tok.offset, f"expected 'as' or 'in' in {{foreach}}, found {describe(tok)}")
            value = self.expect_var("the loop variable")
            if self.is_op(self.peek(), "=>"):
                self.next()
                key, value = value, self.expect_var("the loop variable after =>")
        self.expect_end(tag)
        body, end = self.block(tag, tag, frozenset({"foreachelse", "/foreach"}))
        orelse: Block = ()
        if end.value == "foreachelse":
            orelse, _ = self.block(tag, end, frozenset({"/foreach"}))
        return Foreach(source, key, value, body, orelse)

    def assign_tag(self, tag: Token) -> Assign:
        first = self.peek()
        if first.kind == "NAME" and first.value.lower() in ("var", "value") and self.is_op(self.peek(1), "="):
            return self.smarty_assign(tag)
        value = self.expr()
        tok = self.next()
        if not self.is_word(tok, "to"):
            raise self.error(tok.offset, f"expected 'to' in {{assign … to $name}}, found {describe(tok)}")
        name = self.expect_var("the variable to assign")
        self.expect_end(tag)
        return Assign(name, value)

    def smarty_assign(self, tag: Token) -> Assign:
        """Smarty's ``{assign var="name" value=…}``, attributes in any order."""
        name: str | None = None
        value: Expr | None = None
        while self.peek().kind != "END":
            attr = self.next()
            if attr.kind != "NAME" or attr.value.lower() not in ("var", "value"):
                found = describe(attr)
                raise self.error(attr.offset, f"expected var= or value= in {{assign}}, found {found}")
            self.expect_op("=", "'='")
            if attr.value.lower() == "value":
                value = self.expr()
                continue
            tok = self.next()
            if tok.kind not in ("STR", "NAME") or not str(tok.value):
                raise self.error(tok.offset, f"expected a variable name after var=, found {describe(tok)}")
            name = str(tok.value).lstrip("$")
        if name is None or value is None:
            raise self.error(tag.offset, "{assign} needs both var= and value=")
        self.next()
        return Assign(name, value)

    # expressions
    def expr(self, min_prec: int = 1) -> Expr:
        """Each operator of a chain nests the tree one level deeper (``$a + $b + $c`` is
        ``($a + $b) + $c``), so each counts as a level for as long as the chain is being read."""
        left = self.prefix()
        chained = 0
        while True:
            tok = self.peek()
            if tok.kind == "OP" or tok.kind == "NAME":
                found = _BINARY.get(tok.value if tok.kind == "OP" else tok.value.lower())
            else:
                found = None
            if found is None or found[1] < min_prec:
                self.depth -= chained
                return left
            self.next()
            self.enter(tok.offset)
            chained += 1
            right = self.expr(found[1] + 1)
            left = Binary(found[0], left, right, tok.offset)

    def prefix(self) -> Expr:
        tok = self.peek()
        if self.is_word(tok, "not") or self.is_op(tok, "!"):
            self.next()
            self.enter(tok.offset)
            operand = self.expr(_NOT_OPERAND)
            self.leave()
            return Unary("not", operand)
        if self.is_op(tok, "-"):
            self.next()
            self.enter(tok.offset)
            operand = self.prefix()
            self.leave()
            return negate(operand)
        return self.postfix(modifiers=True)

    def postfix(self, *, modifiers: bool) -> Expr:
        node = self.primary()
        chained = 0  # each member and modifier nests the tree a level deeper
        while True:
            tok = self.peek()
            if tok.kind == "OP" and tok.value in ".[":
                self.enter(tok.offset)
                chained += 1
            if self.is_op(tok, "."):
                self.next()
                name = self.next()  # the lexer reads a name right after '.'
                node = Member(node, Const(name.value))
            elif self.is_op(tok, "["):
                self.next()
                key = self.expr()
                self.expect_op("]", "']'")
                node = Member(node, key)
            else:
                break
        while modifiers and self.is_op(self.peek(), "|"):
            bar = self.next()
            self.enter(bar.offset)
            chained += 1
            name = self.next()
            if name.kind != "NAME":
                raise self.error(name.offset, f"expected a modifier name after '|', found {describe(name)}")
            args: list[Expr] = []
            while self.is_op(self.peek(), ":"):
                self.next()
                args.append(self.argument())
            node = Modify(node, name.value.lower(), tuple(args), bar.offset)
        self.depth -= chained
        return node

    def argument(self) -> Expr:
        """A modifier argument: a value with its members, or a negative number; ``|a:$x|b`` applies
        ``b`` to the result of ``a``, not to ``$x``."""
        tok = self.peek()
        if self.is_op(tok, "-"):
            self.next()
            return negate(self.postfix(modifiers=False))
        return self.postfix(modifiers=False)

    def primary(self) -> Expr:
        tok = self.next()
        if tok.kind == "VAR":
            return Var(tok.value)
        if tok.kind in ("NUM", "STR"):
            return Const(tok.value)
        if tok.kind == "NAME" and tok.value.lower() in _CONSTANTS:
            return Const(_CONSTANTS[tok.value.lower()])
        if self.is_op(tok, "("):
            self.enter(tok.offset)
            inner = self.expr()
            self.leave()
            self.expect_op(")", "')'")
            return inner
        if tok.kind == "NAME":
            message = f"unexpected word {tok.value!r}: a variable starts with $, text needs quotes"
            raise self.error(tok.offset, message)
        raise self.error(tok.offset, f"expected a value, found {describe(tok)}")


def negate(operand: Expr) -> Expr:
    if isinstance(operand, Const) and type(operand.value) in (int, float):
        return Const(-operand.value)
    return Unary("-", operand)


def parse(source: str, part: str = "template") -> Document:
    return Parser(source, part).parse()
