"""Which messages are cheap enough to transform in the server process itself, without a worker.

A worker process costs a round trip per message (the job and the result pickled over a pipe: about half
a millisecond of CPU for a 30 KB newsletter, as much as inlining it), and is there for the messages
that may take long or much memory: those are stopped by killing their worker. Most messages cannot:
their cost has an upper bound that is cheap to compute and small. This module computes it per HTML part
and keeps a message's total under a budget; a message over it goes to a worker as before.

The bound follows how css-inline works: it parses the document (html5ever: linear in its size, with
scope checks up to the nesting depth per tag), then matches every selector against every element, each
step of a selector walking up to the depth (descendant, sibling and ``:nth-*`` steps), then writes every
element with its style attribute (at most all of the CSS). Elements and depth are bounded by the number
of ``<`` (an implied element such as ``<tbody>`` comes with a start tag), selector steps by the length of
the text. So, per part:

- at most :data:`MAX_TAGS` ``<`` and :data:`MAX_CHARS` characters;
- no ``:has(`` (it searches each element's subtree: cubic);
- ``characters * tags ** 2`` at most :data:`MAX_MATCHING`; the slowest selector bombs found within it
  (chains of ``*`` descendants, ``:nth-last-of-type`` over nested elements) take 0.2 to 0.3 s, a
  usual newsletter (30 KB, 170 tags) 0.5 ms;
- ``tags * characters`` at most :data:`MAX_OUTPUT` (the largest possible result: every element with
  every declaration), which also bounds the memory;

and the parts of one message share :data:`MAX_MATCHING` and :data:`MAX_OUTPUT`. A worst case admitted
thus holds the event loop for a fraction of a second, no longer than it would hold a worker; anything
costlier goes to a worker. premailer is never run in process (slow, and its parser has limits of its
own, see :mod:`postwire.transformer.inline`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_TAGS: Final = 1_000  # also keeps the nesting (≤ 2 elements per "<") far from the main thread's stack
MAX_CHARS: Final = 256 * 1024
MAX_MATCHING: Final = 2_000_000_000
MAX_OUTPUT: Final = 16_000_000
MAX_MESSAGE: Final = 1024 * 1024  # octets of a whole message walked in process (MIME parsing is linear)


class NeedsWorker(Exception):
    """This message may be expensive to transform: run it in a worker, under the time and memory limits."""


@dataclass
class Budget:
    """What the parts of one message may still spend in process; :meth:`spend` raises when exhausted."""

    matching: int = MAX_MATCHING
    output: int = MAX_OUTPUT

    def spend(self, html: str, extra_css: str | None, *, inline: bool) -> None:
        """Charge one HTML part (inlined when ``inline``, else only tracked); raise :class:`NeedsWorker`
        when it, or the message so far, is over a limit."""
        tags = html.count("<")
        if tags > MAX_TAGS or len(html) > MAX_CHARS:
            raise NeedsWorker(f"an HTML part has {tags} tags and {len(html)} characters")
        if not inline:
            return  # tracking: one pass of html.parser over the part, linear in its length
        css = extra_css or ""
        if ":has(" in html.lower() or ":has(" in css.lower():
            raise NeedsWorker("the CSS uses :has()")
        chars = len(html) + len(css)
        self.matching -= chars * tags * tags
        self.output -= tags * chars
        if self.matching < 0 or self.output < 0:
            raise NeedsWorker("the HTML parts' length and elements are over the in-process budget")
