"""What the css-inline engine does beyond moving declarations into style attributes, as switches.

The switches are juice's (the reference email inliner), with juice's names accepted by
:meth:`InlineOptions.from_juice`; the defaults are the ones right for email, which are juice's except
where a comment says otherwise. docs/inlining.md explains each choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final


@dataclass(frozen=True, slots=True)
class InlineOptions:
    """Switches for :func:`postwire.transformer.inline.inline_html` (the css-inline engine only)."""

    # Inline the document's <style> blocks (off: only the extra CSS is inlined).
    apply_style_tags: bool = True
    # Drop <style> blocks once inlined, except what is kept below (off: keep them whole as well).
    remove_style_tags: bool = True
    # Keep in <style> what no style attribute can express.
    preserve_media_queries: bool = True
    preserve_font_faces: bool = True
    preserve_key_frames: bool = True
    # juice leaves @container out unless asked; it is a responsive rule like @media, so it is kept.
    preserve_container_queries: bool = True
    preserve_pseudos: bool = True  # a:hover, :focus, ::before... (from <style> blocks and the extra CSS)
    # Put what the extra CSS keeps into the document, as for <style> blocks. juice inserts only its @media,
    # @font-face and @keyframes and drops its a:hover rules, which clients that read <style> would apply.
    insert_preserved_extra_css: bool = True
    # Presentational attributes that clients without CSS support (Outlook's Word engine) still read.
    apply_width_attributes: bool = True  # width="600" on img/table/td/th
    apply_height_attributes: bool = True
    apply_attributes_table_elements: bool = True  # bgcolor, background, align, valign on table cells
    # Keep !important in style attributes. Off by default: an inline !important cannot be overridden by
    # the @media rules in <style>, so responsive layouts would stop working on phones.
    preserve_important: bool = False
    # Replace var(--x) with the custom property's value: most mail clients do not support var().
    resolve_css_variables: bool = True
    excluded_properties: frozenset[str] = frozenset()

    @classmethod
    def from_juice(cls, options: Mapping[str, Any]) -> InlineOptions:
        """Options from juice's camelCase names; others (``url``, ``xmlMode``) are ignored."""
        known = {field.name for field in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in options.items():
            name = _JUICE_NAMES.get(key)
            if name in known:
                values[name] = frozenset(value) if name == "excluded_properties" else bool(value)
        return cls(**values)


_JUICE_NAMES: Final = {
    "applyStyleTags": "apply_style_tags",
    "removeStyleTags": "remove_style_tags",
    "preserveMediaQueries": "preserve_media_queries",
    "preserveFontFaces": "preserve_font_faces",
    "preserveKeyFrames": "preserve_key_frames",
    "preserveContainerQueries": "preserve_container_queries",
    "preservePseudos": "preserve_pseudos",
    "insertPreservedExtraCss": "insert_preserved_extra_css",
    "applyWidthAttributes": "apply_width_attributes",
    "applyHeightAttributes": "apply_height_attributes",
    "applyAttributesTableElements": "apply_attributes_table_elements",
    "preserveImportant": "preserve_important",
    "resolveCSSVariables": "resolve_css_variables",
    "excludedProperties": "excluded_properties",
}

DEFAULT_OPTIONS: Final = InlineOptions()
