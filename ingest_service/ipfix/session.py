"""Template and sequence state, scoped per transport session and observation domain.

A session is what RFC 7011 section 8 scopes templates to: for UDP the exporter's
address AND port, for TCP/TLS one connection.  Keys are opaque tuples built by the
listeners, e.g. ``("udp", "192.0.2.1", 50000, 0)`` or ``("tcp", "10.0.0.1", 41234, 7)``.

Memory is bounded: at most ``max_sessions`` sessions (least recently seen evicted) and
``max_templates`` templates per session (further new templates are refused and
counted); data sets kept while waiting for their template are capped too.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from .enrich import ExporterOptions

SessionKey = tuple


@dataclass(slots=True)
class DomainState:
    """Per (session, observation domain): sequence tracking and learned options."""

    expected_sequence: int | None = None
    last_sys_uptime: int | None = None
    lost: int = 0
    restarts: int = 0
    options: ExporterOptions = field(default_factory=ExporterOptions)


@dataclass(slots=True)
class SessionState:
    key: SessionKey
    templates: dict = field(default_factory=dict)  # (domain, template id) -> Template
    domains: dict = field(default_factory=dict)  # domain -> DomainState
    pending: dict = field(default_factory=dict)  # (domain, template id) -> deque[(received_at, message ctx, bytes)]
    pending_count: int = 0
    last_seen: float = 0.0

    @property
    def expires_templates(self) -> bool:
        # Only UDP templates age out; on TCP/TLS they live as long as the connection.
        return bool(self.key) and self.key[0] == "udp"

    def domain(self, domain_id: int) -> DomainState:
        state = self.domains.get(domain_id)
        if state is None:
            state = self.domains[domain_id] = DomainState()
        return state


class SessionTable:
    def __init__(self, max_sessions: int = 10_000, on_evict=None):
        self.max_sessions = max_sessions
        self._on_evict = on_evict
        self._sessions: OrderedDict[SessionKey, SessionState] = OrderedDict()
        self.evicted = 0

    def get(self, key: SessionKey, now: float) -> SessionState:
        state = self._sessions.get(key)
        if state is None:
            if len(self._sessions) >= self.max_sessions:
                _, victim = self._sessions.popitem(last=False)
                self.evicted += 1
                if self._on_evict is not None:
                    self._on_evict(victim)
            state = self._sessions[key] = SessionState(key)
        else:
            self._sessions.move_to_end(key)
        state.last_seen = now
        return state

    def drop(self, key: SessionKey) -> bool:
        return self._sessions.pop(key, None) is not None

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self):
        return iter(list(self._sessions.values()))

    def template_count(self) -> int:
        return sum(len(s.templates) for s in self._sessions.values())

