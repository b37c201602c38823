"""Loss-free indexing through the ``_bulk`` API: protocol core, disk spool, dead letters, writer."""
from .actions import OP_CREATE, OP_INDEX, ActionSpec, BulkItem, document_id
from .deadletter import DEFAULT_DEADLETTER_INDEX
from .spool import Spool, SpoolConfig
from .writer import COUNTER_NAMES, GAUGE_NAMES, BulkWriter, BulkWriterConfig

__all__ = [
    "COUNTER_NAMES",
    "DEFAULT_DEADLETTER_INDEX",
    "GAUGE_NAMES",
    "OP_CREATE",
    "OP_INDEX",
    "ActionSpec",
    "BulkItem",
    "BulkWriter",
    "BulkWriterConfig",
    "Spool",
    "SpoolConfig",
    "document_id",
]
