#!/usr/bin/env python3
"""Regenerate ``registry_data/vendor_ipfix.csv`` and ``registry_data/vendor_v9.csv`` from the definition
files of logstash-codec-netflow.

Usage::

    python tools/gen_vendor_registry.py                      # rewrite both CSVs from the tests/data copies
    python tools/gen_vendor_registry.py -o /tmp/out          # write into another directory
    python tools/gen_vendor_registry.py --check              # exit 1 if a checked-in CSV is stale
    python tools/gen_vendor_registry.py --netflow N.yaml --ipfix I.yaml   # other copies of the YAML files

Inputs (provenance in ``ingest_service/ipfix/registry_data/SOURCES.md``):

* ``netflow.yaml`` (``{field_type: [type, name]}``): every entry whose field type is not an element id
  of ``iana.csv`` and that is not ``[:skip]`` becomes a row of ``vendor_v9.csv`` (NetFlow v9 vendor
  types: Cisco ASA NSEL, Palo Alto, nProbe, Streamcore, Cisco WLC). Types IANA has are left out: the
  registry maps those to the IANA element.
* ``ipfix.yaml`` (``{enterprise: {element_id: [type, name]}}``): every non-skip entry of an enterprise
  other than 0 (IANA), 29305 (RFC 5103 reverse) and 56506 (Antrea), which the registry defines itself,
  becomes a row of ``vendor_ipfix.csv``.

Types: the codec's type symbol is mapped to an IANA abstract type by ``registry.logstash_type`` (the same
mapping the registry applies to definition files given at run time); the symbol itself is kept in the
``Logstash Type`` column.

Names: the codec's name (leading ``:`` and surrounding blanks removed) is kept, so Logstash dashboards keep
working, except where it is not unique. A name must identify one element: it must not be the name of a
built-in element (IANA, reverse, Antrea), and not be used by another vendor entry. For each name that is:

* the name of a built-in element: every vendor entry with it is renamed;
* used by several vendor entries only: the first of them in canonical order (IPFIX entries by
  (enterprise, element id), then v9 entries by field type) keeps it, the others are renamed.

Renamed means ``<name>_<enterprise>_<id>`` (IPFIX) or ``<name>_v9_<type>`` (v9); the codec's name stays
in the ``Logstash Name`` column. The tool fails if a renamed name is still not unique.

YAML mappings with a repeated key keep the last value (as PyYAML and Ruby's Psych do); repeated keys are
reported on stderr. The output does not depend on the order of entries in the YAML files: rows are sorted
by (enterprise, id) / field type, UTF-8, ``\\n`` line endings, minimal quoting.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from ingest_service.ipfix import registry as reg  # noqa: E402

DEFAULT_NETFLOW = REPO_ROOT / "tests" / "data" / "logstash-codec-netflow.netflow.yaml"
DEFAULT_IPFIX = REPO_ROOT / "tests" / "data" / "logstash-codec-netflow.ipfix.yaml"
DEFAULT_OUTPUT_DIR = reg.DATA_DIR
IPFIX_FILE = reg.VENDOR_IPFIX_CSV.name
V9_FILE = reg.VENDOR_V9_CSV.name

IPFIX_COLUMNS = ("Enterprise ID", "ElementID", "Name", "Abstract Data Type", "Logstash Name", "Logstash Type")
V9_COLUMNS = ("Field Type", "Name", "Abstract Data Type", "Logstash Name", "Logstash Type")
BUILTIN_ENTERPRISES = frozenset({reg.IANA_ENTERPRISE, reg.REVERSE_ENTERPRISE, reg.ANTREA_ENTERPRISE})


class SourceError(ValueError):
    """A definitions file is not what this tool expects."""


@dataclass
class Entry:
    enterprise: int | None  # None: NetFlow v9 field type
    id: int
    logstash_name: str
    logstash_type: str
    type: str
    name: str = ""

    @property
    def order(self) -> tuple[int, int, int]:
        return (0, self.enterprise, self.id) if self.enterprise is not None else (1, 0, self.id)

    @property
    def where(self) -> str:
        return f"v9 type {self.id}" if self.enterprise is None else f"element {self.enterprise}/{self.id}"

    def renamed(self) -> str:
        if self.enterprise is None:
            return f"{self.logstash_name}_v9_{self.id}"
        return f"{self.logstash_name}_{self.enterprise}_{self.id}"


# ------------------------------------------------------------------------------------------------ reading


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader that records repeated mapping keys (the last value is kept, as usual)."""


_DUPLICATES: list[str] = []


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    result: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        value = loader.construct_object(value_node, deep=True)
        if key in result:
            same = "same value" if result[key] == value else f"{result[key]!r} replaced by {value!r}"
            _DUPLICATES.append(f"line {key_node.start_mark.line + 1}: key {key!r} repeated ({same})")
        result[key] = value
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _load(path: Path) -> tuple[dict, list[str]]:
    _DUPLICATES.clear()
    try:
        document = yaml.load(path.read_bytes().decode("utf-8"), Loader=_Loader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SourceError(f"not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise SourceError("top level is not a mapping")
    return document, [f"{path.name}: {d}" for d in _DUPLICATES]


def _number(value: object, what: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise SourceError(f"{what} {value!r} is not a number in 0..{limit}")
    return value


def _entry(enterprise: int | None, element_id: int, spec: object) -> Entry | None:
    where = f"v9 type {element_id}" if enterprise is None else f"element {enterprise}/{element_id}"
    if not isinstance(spec, list) or not spec:
        raise SourceError(f"{where}: definition {spec!r} is not a list [type, name]")
    try:
        data_type = reg.logstash_type(spec[0])
    except ValueError as exc:
        raise SourceError(f"{where}: {exc}") from None
    if data_type is None:
        return None  # [:skip]
    if len(spec) != 2 or not isinstance(spec[1], str) or not spec[1].lstrip(":").strip():
        raise SourceError(f"{where}: definition {spec!r} is not [type, name]")
    logstash_type = str(spec[0]).lstrip(":")
    return Entry(enterprise, element_id, spec[1].lstrip(":").strip(), logstash_type, data_type)


def read_v9(path: Path, iana_ids: set[int]) -> tuple[list[Entry], list[str]]:
    document, notes = _load(path)
    entries = []
    for key, spec in document.items():
        field_type = _number(key, "field type", 0xFFFF)
        if field_type in iana_ids:
            continue
        entry = _entry(None, field_type, spec)
        if entry is None:
            notes.append(f"{path.name}: v9 type {field_type} is [:skip], left out")
        else:
            entries.append(entry)
    return entries, notes


def read_ipfix(path: Path) -> tuple[list[Entry], list[str]]:
    document, notes = _load(path)
    entries = []
    for key, table in document.items():
        enterprise = _number(key, "enterprise number", 0xFFFFFFFF)
        if enterprise in BUILTIN_ENTERPRISES:
            continue
        if not isinstance(table, dict):
            raise SourceError(f"enterprise {enterprise}: expected a mapping of element ids")
        for element_id, spec in table.items():
            entry = _entry(enterprise, _number(element_id, f"enterprise {enterprise}: element id", 0x7FFF), spec)
            if entry is None:
                notes.append(f"{path.name}: element {enterprise}/{element_id} is [:skip], left out")
            else:
                entries.append(entry)
    return entries, notes


# ------------------------------------------------------------------------------------------------- naming


def assign_names(entries: list[Entry], reserved: set[str]) -> list[str]:
    """Set ``Entry.name`` (see the module docstring); returns one note per renamed entry."""
    notes = []
    groups: dict[str, list[Entry]] = {}
    for entry in sorted(entries, key=lambda e: e.order):
        groups.setdefault(entry.logstash_name, []).append(entry)
    for name, group in groups.items():
        keep = None if name in reserved else group[0]
        for entry in group:
            entry.name = name if entry is keep else entry.renamed()
            if entry is not keep:
                why = "a built-in element's name" if keep is None else f"also used by {keep.where}"
                notes.append(f"{entry.where}: {name!r} is {why}; named {entry.name!r}")
    seen: dict[str, Entry] = {}
    for entry in sorted(entries, key=lambda e: e.order):
        if entry.name in reserved or entry.name in seen:
            other = "a built-in element" if entry.name in reserved else seen[entry.name].where
            raise SourceError(f"{entry.where}: name {entry.name!r} is still not unique (also {other})")
        seen[entry.name] = entry
    return notes


# ------------------------------------------------------------------------------------------------ writing


def _csv(columns: tuple[str, ...], rows: list[list[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


def generate(netflow_path: Path, ipfix_path: Path) -> tuple[dict[str, str], list[str]]:
    """Return ({file name: content}, notes) for the two YAML files."""
    standard = reg._standard_elements()
    iana_ids = {e.id for e in standard if e.enterprise == reg.IANA_ENTERPRISE}
    reserved = {e.name for e in standard if e.name}
    notes = []
    try:
        v9, more = read_v9(netflow_path, iana_ids)
    except SourceError as exc:
        raise SourceError(f"{netflow_path}: {exc}") from None
    notes += more
    try:
        ipfix, more = read_ipfix(ipfix_path)
    except SourceError as exc:
        raise SourceError(f"{ipfix_path}: {exc}") from None
    notes += more
    if not v9 or not ipfix:
        raise SourceError("no vendor entries found (wrong files?)")
    notes += assign_names(ipfix + v9, reserved)

    ipfix_rows = [
        [e.enterprise, e.id, e.name, e.type, e.logstash_name, e.logstash_type]
        for e in sorted(ipfix, key=lambda e: e.order)
    ]
    v9_rows = [[e.id, e.name, e.type, e.logstash_name, e.logstash_type] for e in sorted(v9, key=lambda e: e.order)]
    return {IPFIX_FILE: _csv(IPFIX_COLUMNS, ipfix_rows), V9_FILE: _csv(V9_COLUMNS, v9_rows)}, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netflow", type=Path, default=DEFAULT_NETFLOW, help="default: %(default)s")
    parser.add_argument("--ipfix", type=Path, default=DEFAULT_IPFIX, help="default: %(default)s")
    parser.add_argument("-o", "--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR, help="default: %(default)s")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if an output would change")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not print notes")
    args = parser.parse_args(argv)

    try:
        outputs, notes = generate(args.netflow, args.ipfix)
    except (OSError, SourceError) as exc:
        print(f"gen_vendor_registry: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        for note in notes:
            print(f"gen_vendor_registry: note: {note}", file=sys.stderr)

    if args.check:
        stale = []
        for name, text in outputs.items():
            path = args.output_dir / name
            if not path.exists() or path.read_bytes() != text.encode("utf-8"):
                stale.append(str(path))
        if stale:
            print(f"gen_vendor_registry: out of date: {', '.join(stale)}; run tools/gen_vendor_registry.py",
                  file=sys.stderr)
            return 1
        return 0

    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in outputs.items():
        (args.output_dir / name).write_bytes(text.encode("utf-8"))
        print(f"gen_vendor_registry: wrote {text.count(chr(10)) - 1} entries to {args.output_dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
