"""How a contract violation reads: `essays[2].text_storage_id: value must be ... [rule]`."""

from __future__ import annotations

import protovalidate
from buf.validate import validate_pb2


def field_path(violation: validate_pb2.Violation) -> str:
    """`essays[2].text_storage_id` style path of a violation ('' for message-level rules)."""
    parts: list[str] = []
    for element in violation.field.elements:
        part = element.field_name
        subscript = element.WhichOneof("subscript")
        if subscript is not None:
            key = getattr(element, subscript)
            part += f"[{key!r}]" if subscript == "string_key" else f"[{key}]"
        parts.append(part)
    return ".".join(parts)


def violations_of(error: protovalidate.ValidationError) -> validate_pb2.Violations:
    # protovalidate speaks protobuf-py; re-read its bytes as the google-protobuf class we generate.
    return validate_pb2.Violations.FromString(error.to_proto().to_binary())


def printable(text: str) -> str:
    """Control characters shown as escapes, so a rule about NUL does not put a NUL in a message."""
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)


def describe(violations: validate_pb2.Violations) -> str:
    """One line per violation: `field: what is wrong`."""
    return "; ".join(
        f"{field_path(v) or '(message)'}: {printable(v.message)} [{v.rule_id}]" for v in violations.violations
    )
