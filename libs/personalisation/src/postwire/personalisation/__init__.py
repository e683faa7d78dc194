"""SMTPeter's personalisation language: Smarty-like templates (``{$name|default:"friend"}``,
``{if}``, ``{foreach}``, ``{assign}``) as Copernica's SMART-TPL defines them, compiled once and rendered
per recipient by a small interpreter with limits.

``compile_template(source, part=…)`` parses and compiles (raises :class:`TemplateSyntaxError` with the
line and column); ``Template.render(data, limits)`` fills in one recipient's JSON-like data (raises
:class:`RenderError` past :class:`Limits`); ``has_tags(text)`` says whether text could hold template
syntax at all, so plain mail skips compiling; ``tag_spans(text)`` says where each tag is, for tools that
change the text around the tags and must keep them as written. The language is described in
docs/personalisation.md. Output is not escaped unless the template asks (``|escape``), as on SMTPeter.
"""

from postwire.personalisation.errors import RenderError, TemplateSyntaxError
from postwire.personalisation.lexer import has_tags, tag_spans
from postwire.personalisation.limits import DEFAULT_LIMITS, Limits
from postwire.personalisation.render import Template, compile_template

__all__ = ["DEFAULT_LIMITS", "Limits", "RenderError", "Template", "TemplateSyntaxError", "compile_template",
           "has_tags", "tag_spans"]
