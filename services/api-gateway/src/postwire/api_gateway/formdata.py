"""Form bodies (``application/x-www-form-urlencoded``, ``multipart/form-data``) as the JSON they stand for.

SMTPeter clients post forms the way PHP builds them, so the same pydantic model can validate a form and
a JSON body once the form is nested:

- ``a=1&a=2`` and ``a[]=1&a[]=2`` → ``{"a": ["1", "2"]}`` (``a[]=1`` alone is a one-item list);
- ``dsn[notify]=FAILURE`` → ``{"dsn": {"notify": "FAILURE"}}``; ``extra[x-foo]=bar`` likewise;
- ``attachments[0][data]=…&attachments[0][name]=…`` → ``{"attachments": [{"data": …, "name": …}]}``
  (a level whose keys are all numbers becomes a list, in numeric order);
- an empty value is left out (an empty form field means "not given").

Values stay strings; the model reads ``"true"``/``"false"``/``"1"``/``"0"`` as booleans. Conflicting
names (``a=1&a[b]=2``), deeper nesting than :data:`MAX_DEPTH` or more than :data:`MAX_FIELDS` fields are
refused with :class:`FormError`, which names the field.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Final
from urllib.parse import parse_qsl

MAX_FIELDS: Final = 2000
MAX_DEPTH: Final = 4
_NAME: Final = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SUBSCRIPT: Final = re.compile(r"\[([^\[\]]*)\]")


class FormError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Values(list[str]):
    """Values of one leaf name; ``forced`` when written as ``name[]`` (a list even with one value)."""

    forced = False


def urlencoded_pairs(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=False,
                         encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise FormError("", "the form is not valid UTF-8 (percent-encode every non-ASCII character)") \
            from None
    except ValueError:
        raise FormError("", f"more than {MAX_FIELDS} form fields") from None


def multipart_pairs(body: bytes, content_type: str) -> list[tuple[str, str]]:
    """Each part's name and text; a part must be UTF-8 text (attachments go base64 in
    ``attachments[N][data]``, as in JSON)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    msg = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not isinstance(msg, EmailMessage) or not msg.is_multipart():
        raise FormError("", "not a multipart/form-data body (is the boundary right?)")
    pairs: list[tuple[str, str]] = []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            raise FormError("", "a form part has no name (Content-Disposition: form-data; name=…)")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        try:
            pairs.append((name, data.decode(part.get_content_charset() or "utf-8")))
        except (UnicodeDecodeError, LookupError):
            raise FormError(name, "form parts must be text (UTF-8); send files base64-encoded in "
                            "attachments[N][data]") from None
        if len(pairs) > MAX_FIELDS:
            raise FormError("", f"more than {MAX_FIELDS} form fields")
    return pairs


def nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """The JSON object the bracket-notation ``pairs`` describe (see the module docstring)."""
    root: dict[str, Any] = {}
    for name, value in pairs:
        path = _path(name)
        if value == "":
            continue
        append = path[-1] == ""  # name[]: add to a list
        keys = path[:-1] if append else path
        node = root
        for i, key in enumerate(keys[:-1]):
            if key == "":
                raise FormError(name, f"{name!r}: [] is only allowed at the end of a name")
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise FormError(name, f"{name!r} conflicts with {'.'.join(keys[:i + 1])!r} given as a value")
            node = child
        _put(node, keys[-1], value, name, append)
    return {k: _finish(v) for k, v in root.items()}  # the top level stays an object, even "0=a"


def _path(name: str) -> list[str]:
    m = _NAME.match(name)
    if m is None:
        raise FormError(name, f"malformed form field name {name!r}")
    path = [m[1], *_SUBSCRIPT.findall(m[2])]
    if len(path) > MAX_DEPTH + 1:
        raise FormError(name, f"{name!r} is nested deeper than {MAX_DEPTH} levels")
    return path


def _put(node: dict[str, Any], key: str, value: str, name: str, append: bool) -> None:
    if key == "":
        raise FormError(name, f"{name!r}: [] is only allowed at the end of a name")
    current = node.get(key)
    if isinstance(current, dict):
        raise FormError(name, f"{name!r} is given both as a value and with [subscripts]")
    if current is None:
        current = node[key] = _Values()
    current.append(value)
    current.forced = current.forced or append


def _finish(node: Any) -> Any:
    if isinstance(node, _Values):
        return node[0] if len(node) == 1 and not node.forced else list(node)
    assert isinstance(node, dict)
    done = {k: _finish(v) for k, v in node.items()}
    if done and all(k.isdigit() for k in done):
        return [done[k] for k in sorted(done, key=int)]
    return done
