"""Template definitions as they arrive on the wire, and their resolution to names/types.

A template is a tuple of :class:`FieldSpec` (what the exporter said) plus the
resolved element (what our registries know about it).  Resolution happens once per
template, never per record.
"""
from __future__ import annotations

from dataclasses import dataclass, field

VARIABLE_LENGTH = 65535
PADDING_OCTETS_ID = 210

# RFC 3954 section 6.1: NetFlow v9 options scope field types.
V9_SCOPE_NAMES = {1: "scopeSystem", 2: "scopeInterface", 3: "scopeLineCard", 4: "scopeCache", 5: "scopeTemplate"}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One template field: its element id, enterprise number (0 = IANA) and length."""

    element_id: int
    length: int
    enterprise: int = 0


@dataclass(frozen=True, slots=True)
class ResolvedField:
    """A template field with the name and abstract type it is decoded as."""

    name: str
    type: str  # IANA abstract data type; "octetArray" for unknown elements
    length: int
    known: bool  # False: unknown to every registry, kept as raw hex
    skip: bool = False  # paddingOctets and Logstash ":skip" entries


@dataclass(slots=True)
class Template:
    """A (possibly options) template of one exporter session and observation domain."""

    template_id: int
    fields: tuple[FieldSpec, ...]
    scope_field_count: int = 0  # > 0 for options templates
    version: int = 10
    received_at: float = 0.0
    resolved: tuple[ResolvedField, ...] = ()
    decoder: object = None  # compiled decoder, see compiler.compile_template
    extra: dict = field(default_factory=dict)

    @property
    def is_options(self) -> bool:
        return self.scope_field_count > 0 or self.version == 9 and bool(self.extra.get("v9_options"))


def unknown_element_name(enterprise: int, element_id: int) -> str:
    """Stable name for an element no registry knows: ``<enterprise>_<id>``."""
    return f"{enterprise}_{element_id}"


def unknown_v9_name(field_type: int) -> str:
    return f"v9_{field_type}"


def resolve_ipfix_fields(registry, fields: tuple[FieldSpec, ...]) -> tuple[ResolvedField, ...]:
    resolved = []
    for spec in fields:
        element = registry.lookup(spec.enterprise, spec.element_id)
        if element is None:
            resolved.append(ResolvedField(unknown_element_name(spec.enterprise, spec.element_id), "octetArray", spec.length, False))
        else:
            skip = (spec.enterprise == 0 and spec.element_id == PADDING_OCTETS_ID) or not element.name
            resolved.append(ResolvedField(element.name, element.type, spec.length, True, skip))
    return _dedupe_names(resolved)


def resolve_v9_fields(registry, fields: tuple[FieldSpec, ...], scope_count: int = 0) -> tuple[ResolvedField, ...]:
    resolved = []
    for index, spec in enumerate(fields):
        if index < scope_count:
            # Scope fields use RFC 3954's own namespace, not IANA ids. The system scope is
            # an opaque id (kept as hex, as tshark shows it); the others are indexes.
            name = V9_SCOPE_NAMES.get(spec.element_id, f"scope_{spec.element_id}")
            kind = "unsigned64" if spec.element_id in (2, 3, 4, 5) else "octetArray"
            resolved.append(ResolvedField(name, kind, spec.length, True))
            continue
        element = registry.lookup_v9(spec.element_id)
        if element is None:
            resolved.append(ResolvedField(unknown_v9_name(spec.element_id), "octetArray", spec.length, False))
        else:
            skip = spec.element_id == PADDING_OCTETS_ID or not element.name
            resolved.append(ResolvedField(element.name, element.type, spec.length, True, skip))
    return _dedupe_names(resolved)


def _dedupe_names(resolved: list[ResolvedField]) -> tuple[ResolvedField, ...]:
    # A template may carry the same element twice; keep both values as name, name#2, ...
    seen: dict[str, int] = {}
    out = []
    for item in resolved:
        count = seen.get(item.name, 0) + 1
        seen[item.name] = count
        if count > 1 and not item.skip:
            item = ResolvedField(f"{item.name}#{count}", item.type, item.length, item.known, item.skip)
        out.append(item)
    return tuple(out)
