"""Bearer tokens: who may push flows and who may read metrics.

Tokens come from the configuration: ``tokens`` may do everything, ``read_tokens`` may only
read (``/metrics``).  Without any token the API is open, which the app refuses unless it
listens on loopback only (see :func:`listen_problem`).  A presented token is compared with
every configured one in constant time (``hmac.compare_digest`` over SHA-256 digests, so
neither the position of the first differing byte nor the token lengths leak).
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress

from flask import current_app, g, request

from . import error_response

RIGHT_INGEST = "ingest"
RIGHT_READ = "read"
ALL_RIGHTS = frozenset({RIGHT_INGEST, RIGHT_READ})
READ_ONLY = frozenset({RIGHT_READ})


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenAuth:
    def __init__(self, tokens=(), read_tokens=()):
        self._entries = [(_digest(t), ALL_RIGHTS) for t in tokens] + [(_digest(t), READ_ONLY) for t in read_tokens]

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def rights_of(self, token: str) -> frozenset:
        """Rights of a presented token (empty if it is not configured)."""
        presented = _digest(token)
        rights = frozenset()
        for digest, granted in self._entries:  # no early exit: the time does not tell which matched
            if hmac.compare_digest(presented, digest):
                rights = rights | granted
        return rights


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (and unix sockets)."""
    if host.startswith("unix:") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name or a wildcard ("", "0.0.0.0", "::"): reachable from outside


def listen_problem(host: str, tokens, read_tokens=()) -> str | None:
    if any(not t or t != t.strip() for t in (*tokens, *read_tokens)):
        return "tokens must be non-empty and must not start or end with spaces"
    if not tokens and not is_loopback(host):
        return (f"refusing to listen on {host or 'all addresses'} without authentication: configure bearer "
                f"tokens, or listen on 127.0.0.1")
    return None


def require(right: str):
    """View decorator: 401 without a valid bearer token, 403 when the token lacks ``right``."""

    def decorate(view):
        @functools.wraps(view)
        def guarded(*args, **kwargs):
            denial = check(right)
            return denial if denial is not None else view(*args, **kwargs)

        return guarded

    return decorate


def check(right: str):
    """None if the request may proceed, else the 401/403 response."""
    auth: TokenAuth = current_app.extensions["flow_ingest_auth"]
    if not auth.enabled:
        return None
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        response = error_response(401, "unauthorized", "a bearer token is required (Authorization: Bearer <token>)")
        response.headers["WWW-Authenticate"] = 'Bearer realm="flow-ingest"'
        return response
    rights = auth.rights_of(token)
    if not rights:
        response = error_response(401, "unauthorized", "the bearer token is not valid")
        response.headers["WWW-Authenticate"] = 'Bearer realm="flow-ingest", error="invalid_token"'
        return response
    if right not in rights:
        response = error_response(403, "forbidden", f"the token lacks the {right!r} right")
        response.headers["WWW-Authenticate"] = (f'Bearer realm="flow-ingest", error="insufficient_scope", '
                                                f'scope="{right}"')
        return response
    g.flow_ingest_rights = rights
    return None
