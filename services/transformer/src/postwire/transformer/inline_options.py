"""What the css-inline engine does beyond moving declarations into style attributes, as switches.

The switches are juice's (the reference email inliner), with juice's names accepted by
:meth:`InlineOptions.from_juice`; the defaults are the ones right for email, which are juice's except
where a comment says otherwise. docs/inlining.md explains each choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from postwire.transformer.code_blocks import DEFAULT_CODE_BLOCKS, CodeBlock


@dataclass(frozen=True, slots=True)
class InlineOptions:
    """Switches for :func:`postwire.transformer.inline.inline_html` (the css-inline engine only)."""

    # Inline the document's <style> blocks (off: only the extra CSS is inlined).
    apply_style_tags: bool = True
    # Drop <style> blocks once inlined, except what is kept below (off: keep them whole as well).
    remove_style_tags: bool = True
    # With remove_style_tags off: take out of the kept <style> blocks the selectors that were inlined.
    remove_inlined_selectors: bool = False
    # Keep in <style> what no style attribute can express.
    preserve_media_queries: bool = True
    preserve_font_faces: bool = True
    preserve_key_frames: bool = True
    preserve_container_queries: bool = True  # a responsive rule like @media (older juice: off)
    preserve_layers: bool = True  # @layer blocks (their rules are not inlined)
    preserve_pseudos: bool = True  # rules whose first selector needs state (a:hover, :focus...)
    # Put what the extra CSS keeps into the document, as for <style> blocks: every at-rule (juice: only
    # @media, @font-face, @keyframes, @container, @layer); its a:hover rules are dropped, as in juice.
    insert_preserved_extra_css: bool = True
    # Presentational attributes that clients without CSS support (Outlook's Word engine) still read.
    apply_width_attributes: bool = True  # width="600" on img/table/td/th
    apply_height_attributes: bool = True
    apply_attributes_table_elements: bool = True  # bgcolor, background, align, valign on table cells
    # Keep !important in style attributes. Off by default: an inline !important cannot be overridden by
    # the @media rules in <style>, so responsive layouts would stop working on phones.
    preserve_important: bool = False
    # Make the kept :hover/:active/:focus/:visited/:link rules !important, so they beat inlined styles.
    add_important_to_pseudo_classes: bool = False
    # Replace var(--x) with the custom property's value: most mail clients do not support var().
    resolve_css_variables: bool = True
    excluded_properties: frozenset[str] = frozenset()
    # Rules with a selector holding one of these (by substring) stay in <style> too, as well as inlined.
    preserved_selectors: tuple[str, ...] = ()
    # Write every declaration of every matching rule, not only the winner's (per element:
    # data-juice-duplicates), for progressive enhancement; the winner's own repeats are always written.
    inline_duplicate_properties: bool = False
    # Write ::before/::after boxes as <span>s (an <img> for ``content: url(...)``) in the element, their
    # counters, attr() and var() worked out. Off, as in juice: it changes the document's structure.
    inline_pseudo_elements: bool = False
    # Write void elements XHTML-style (``<br/>``), for senders whose pipeline reads the HTML as XML.
    xml_mode: bool = False
    # Template code kept away from the HTML parser and put back as written (juice's codeBlocks).
    code_blocks: tuple[CodeBlock, ...] = DEFAULT_CODE_BLOCKS

    @classmethod
    def from_juice(cls, options: Mapping[str, Any]) -> InlineOptions:
        """Options from juice's camelCase names; others (``url``, ``webResources``) are ignored."""
        known = {field.name for field in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in options.items():
            name = _JUICE_NAMES.get(key)
            if name == "excluded_properties":
                values[name] = frozenset(value)
            elif name == "preserved_selectors":
                values[name] = tuple(value)
            elif name == "code_blocks":
                values[name] = _code_blocks(value)
            elif name in known:
                values[name] = bool(value)
        return cls(**values)


def _code_blocks(blocks: Mapping[str, Mapping[str, str]]) -> tuple[CodeBlock, ...]:
    """juice's ``codeBlocks`` (``{"HBS": {"start": "{{", "end": "}}"}}``) added to its defaults."""
    added = [(block["start"], block["end"]) for block in blocks.values()]
    return (*DEFAULT_CODE_BLOCKS, *(block for block in added if block not in DEFAULT_CODE_BLOCKS))


_JUICE_NAMES: Final = {
    "applyStyleTags": "apply_style_tags",
    "removeStyleTags": "remove_style_tags",
    "removeInlinedSelectors": "remove_inlined_selectors",
    "preserveMediaQueries": "preserve_media_queries",
    "preserveFontFaces": "preserve_font_faces",
    "preserveKeyFrames": "preserve_key_frames",
    "preserveContainerQueries": "preserve_container_queries",
    "preserveLayers": "preserve_layers",
    "preservePseudos": "preserve_pseudos",
    "insertPreservedExtraCss": "insert_preserved_extra_css",
    "applyWidthAttributes": "apply_width_attributes",
    "applyHeightAttributes": "apply_height_attributes",
    "applyAttributesTableElements": "apply_attributes_table_elements",
    "preserveImportant": "preserve_important",
    "addImportantToPseudoClasses": "add_important_to_pseudo_classes",
    "resolveCSSVariables": "resolve_css_variables",
    "excludedProperties": "excluded_properties",
    "preservedSelectors": "preserved_selectors",
    "inlinePseudoElements": "inline_pseudo_elements",
    "inlineDuplicateProperties": "inline_duplicate_properties",
    "xmlMode": "xml_mode",
    "codeBlocks": "code_blocks",
}

DEFAULT_OPTIONS: Final = InlineOptions()
