"""A streaming, defused parse of report XML into small nodes, one ``<record>`` at a time.

defusedxml's expat parser refuses any DTD, so entity expansion (billion laughs) and external entities
cannot happen: a DMARC report never needs a DTD. Our own target builds a light tree instead of an
ElementTree, checks the depth and the root as elements open, and hands each finished ``<record>`` to a
callback and forgets it, so memory follows the largest record, not the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from defusedxml import DefusedXmlException  # type: ignore[import-untyped]
from defusedxml.ElementTree import DefusedXMLParser  # type: ignore[import-untyped]

from postwire.dmarc.errors import ENTITY_EXPANSION, NOT_AGGREGATE_REPORT, TOO_DEEP, InvalidReport
from postwire.dmarc.limits import Limits

ROOT = "feedback"
RECORD = "record"
_CHUNK = 1 << 16


@dataclass(slots=True)
class Node:
    """One element: local name, namespace, children and text (text kept only for what the report reads)."""

    name: str
    namespace: str = ""
    children: list[Node] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)

    def child(self, name: str) -> Node | None:
        """The first child called ``name``: a repeated single-valued element keeps its first value."""
        return next((c for c in self.children if c.name == name), None)

    def all(self, name: str) -> list[Node]:
        return [c for c in self.children if c.name == name]

    @property
    def text(self) -> str:
        return "".join(self.parts).strip()

    def text_of(self, name: str) -> str | None:
        """The stripped text of the child ``name``, or None when there is no such child."""
        found = self.child(name)
        return None if found is None else found.text


class _Builder:
    """The parser's target: builds Nodes, finds the report root, enforces depth, streams records out.

    The report root is ``<feedback>`` as the document element or as the first element inside it: some
    reporters wrap the report in an element of their own (an ``<xs:schema>`` opener), and nothing else
    in such a wrapper is read.
    """

    def __init__(self, limits: Limits, on_record: Callable[[Node], None]) -> None:
        self.limits = limits
        self.on_record = on_record
        self.stack: list[Node] = []
        self.root: Node | None = None
        self.wrapper: Node | None = None
        self.names: dict[str, tuple[str, str]] = {}  # "{ns}name" -> (ns, name): a report has few tags

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        split = self.names.get(tag)
        if split is None:
            namespace, _, name = tag[1:].rpartition("}") if tag.startswith("{") else ("", "", tag)
            split = (namespace, name)
            if len(self.names) < 1000:  # a hostile file may use a new tag name for every element
                self.names[tag] = split
        node = Node(split[1], split[0])
        if len(self.stack) >= self.limits.max_xml_depth:
            raise InvalidReport(TOO_DEEP, f"the XML nests deeper than {self.limits.max_xml_depth} elements")
        if self.root is None:
            self._find_root(node)
        elif self.stack and self.stack[-1] is not self.wrapper:
            self.stack[-1].children.append(node)
        self.stack.append(node)

    def _find_root(self, node: Node) -> None:
        if node.name == ROOT:
            self.root = node
        elif not self.stack:
            self.wrapper = node
        else:
            raise InvalidReport(NOT_AGGREGATE_REPORT, f"the XML is a <{self.stack[0].name}> document, "
                                "not a DMARC aggregate report (<feedback>)")

    def end(self, tag: str) -> None:
        node = self.stack.pop()
        if node.name == RECORD and self.stack and self.stack[-1] is self.root:
            self.root.children.pop()
            self.on_record(node)

    def data(self, text: str) -> None:
        # whitespace between child elements is layout, and keeping it would grow with the record count
        if self.stack and (text.strip() or not self.stack[-1].children):
            self.stack[-1].parts.append(text)

    def close(self) -> Node:
        if self.root is None:
            name = self.wrapper.name if self.wrapper else "empty"
            raise InvalidReport(NOT_AGGREGATE_REPORT,
                                f"the XML is a <{name}> document, not a DMARC aggregate report (<feedback>)")
        return self.root


def parse_feedback_tree(text: str, limits: Limits, on_record: Callable[[Node], None]) -> Node:
    """The ``<feedback>`` root without its records, which went to ``on_record`` in document order.

    Raises ``ParseError`` for XML that is not well-formed (the caller may repair and retry) and
    ``InvalidReport`` for a DTD or entity, too deep a document or a root that is not ``<feedback>``.
    """
    builder = _Builder(limits, on_record)
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        for offset in range(0, len(text), _CHUNK):
            parser.feed(text[offset:offset + _CHUNK])
        return parser.close()  # type: ignore[no-any-return]
    except DefusedXmlException as exc:
        raise InvalidReport(ENTITY_EXPANSION, "the XML declares a DTD or entities, which a report never "
                            f"needs and which can expand without bound ({type(exc).__name__})") from None
