#!/usr/bin/env python3
"""Regenerate ``ingest_service/ipfix/registry_data/iana.csv`` from IANA's registry export.

Usage::

    python tools/gen_registry.py ipfix-information-elements.csv            # rewrite iana.csv
    python tools/gen_registry.py SRC.csv -o /tmp/iana.csv                  # write elsewhere
    python tools/gen_registry.py SRC.csv --check                           # exit 1 if iana.csv is stale

``SRC.csv`` is the CSV that IANA publishes for the "IPFIX Information Elements" registry
(``https://www.iana.org/assignments/ipfix/ipfix-information-elements.csv``). The copy the checked-in file
was generated from is ``tests/data/ipfix-information-elements.csv`` (see
``ingest_service/ipfix/registry_data/SOURCES.md``).

What is kept: every row whose ElementID is a single number and that has a Name and an Abstract Data Type
(current and deprecated elements alike). Dropped: ranges ("34-35", "530-32767"), "Reserved" rows and
withdrawn ids without a name. The prose columns (Description, Additional Information) are dropped; the
kept columns keep IANA's names and order. Whitespace inside a kept value is collapsed to single spaces.

The output is deterministic: rows sorted by ElementID, UTF-8, "\\n" line endings, minimal quoting, so
regenerating from the same source gives identical bytes whatever the source's line endings are.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "ingest_service" / "ipfix" / "registry_data" / "iana.csv"

# Columns written, in IANA's order and with IANA's names.
OUTPUT_COLUMNS = (
    "ElementID",
    "Name",
    "Abstract Data Type",
    "Data Type Semantics",
    "Status",
    "Units",
    "Range",
    "Reference",
    "Revision",
    "Date",
)
REQUIRED_COLUMNS = ("ElementID", "Name", "Abstract Data Type", "Data Type Semantics", "Status", "Units")

# RFC 7012 section 3.1 abstract data types, plus unsigned256 (added to IANA's data-type registry together
# with tcpOptionsFull, element 520).
ABSTRACT_TYPES = frozenset(
    """unsigned8 unsigned16 unsigned32 unsigned64 signed8 signed16 signed32 signed64 float32 float64
    boolean macAddress octetArray string dateTimeSeconds dateTimeMilliseconds dateTimeMicroseconds
    dateTimeNanoseconds ipv4Address ipv6Address basicList subTemplateList subTemplateMultiList
    unsigned256""".split()
)
STATUSES = frozenset({"current", "deprecated"})


class SourceError(ValueError):
    """The source CSV is not what this tool expects."""


def _clean(value: str | None) -> str:
    return " ".join((value or "").split())


def convert(source_text: str) -> str:
    """Return the content of iana.csv for the text of IANA's ipfix-information-elements.csv."""
    if source_text.startswith("\ufeff"):
        source_text = source_text[1:]
    reader = csv.DictReader(io.StringIO(source_text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise SourceError(f"source CSV lacks column(s) {missing}; header is {header}")

    rows: dict[int, dict[str, str]] = {}
    names: dict[str, int] = {}
    for line_no, raw in enumerate(reader, start=2):
        element_id = _clean(raw.get("ElementID"))
        name = _clean(raw.get("Name"))
        data_type = _clean(raw.get("Abstract Data Type"))
        if not element_id.isdigit() or not name or not data_type:
            continue  # ranges, Reserved/Unassigned rows, withdrawn ids without a name
        eid = int(element_id)
        if not 0 < eid < 32768:
            raise SourceError(f"record {line_no}: ElementID {eid} out of range 1..32767")
        if data_type not in ABSTRACT_TYPES:
            raise SourceError(f"record {line_no}: element {eid} {name}: unknown abstract data type {data_type!r}")
        status = _clean(raw.get("Status"))
        if status not in STATUSES:
            raise SourceError(f"record {line_no}: element {eid} {name}: unknown status {status!r}")
        if eid in rows:
            raise SourceError(f"record {line_no}: ElementID {eid} appears twice")
        if name in names:
            raise SourceError(f"record {line_no}: name {name} used by elements {names[name]} and {eid}")
        names[name] = eid
        row = {col: _clean(raw.get(col)) for col in OUTPUT_COLUMNS}
        row["ElementID"] = str(eid)
        rows[eid] = row

    if not rows:
        raise SourceError("source CSV has no named elements")

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(OUTPUT_COLUMNS)
    for eid in sorted(rows):
        writer.writerow([rows[eid][col] for col in OUTPUT_COLUMNS])
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="IANA's ipfix-information-elements.csv")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="default: %(default)s")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the output would change")
    args = parser.parse_args(argv)

    try:
        text = convert(args.source.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, SourceError) as exc:
        print(f"gen_registry: {args.source}: {exc}", file=sys.stderr)
        return 2
    data = text.encode("utf-8")

    if args.check:
        try:
            current = args.output.read_bytes()
        except FileNotFoundError:
            current = b""
        if current != data:
            print(f"gen_registry: {args.output} is out of date; run tools/gen_registry.py {args.source}",
                  file=sys.stderr)
            return 1
        return 0

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    print(f"gen_registry: wrote {text.count(chr(10)) - 1} elements to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
