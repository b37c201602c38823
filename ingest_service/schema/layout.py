"""Document layouts rendered from the schema table: Logstash-compatible ``ipfix.*`` (default)
or ECS.  Pure functions over dicts."""
from __future__ import annotations

from functools import lru_cache

from .table import flow_schema

LAYOUTS = ("logstash", "ecs")


def ecs_moves() -> dict[str, str]:
    """field name under the target object -> ECS path, for every field that has one."""
    return {f.name: f.ecs for f in flow_schema().fields if f.ecs}


@lru_cache(maxsize=1)
def _split_moves() -> tuple[tuple[str, list[str]], ...]:
    return tuple((name, path.split(".")) for name, path in ecs_moves().items())


def to_ecs(document: dict, target: str = "ipfix") -> dict:
    """Move the fields that have an ECS path out of the target object, in place.

    Fields without an ECS path stay under the target object; the exporter address becomes
    ``observer.ip`` and the Logstash ``host``/``type``/``@version`` fields are dropped.
    """
    body = document.get(target)
    if isinstance(body, dict):
        for name, parts in _split_moves():
            if name in body:
                value = body.pop(name)
                node = document
                for part in parts[:-1]:
                    node = node.setdefault(part, {})
                node[parts[-1]] = value
    host = document.pop("host", None)
    if host is not None:
        document.setdefault("observer", {})["ip"] = host
    document.pop("type", None)
    document.pop("@version", None)
    return document
