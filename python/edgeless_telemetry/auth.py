"""Bearer tokens between nodes and the collector.

A collector may take one shared token (any node may send with it) and/or
one token per node (a batch sent with it must carry that node's id). Tokens
are kept as SHA-256 digests and a presented token is compared with every
one of them by `hmac.compare_digest`, so the time taken says nothing about
how much of a token was right, nor which token matched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path

TOKEN_ENV = "EDGELESS_TELEMETRY_TOKEN"
"""Environment variable the ``node`` and ``orchestrator`` commands read the
shared token from when ``--token`` is not given (argv is visible to every
user of the machine; the environment is not)."""

_TOKEN_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/="
)


def check_token(token: object, what: str = "token") -> str:
    """Returns ``token`` if it can travel in an ``Authorization: Bearer``
    header (RFC 6750 characters, 1..4096 of them), else raises ValueError."""
    if not isinstance(token, str) or not 0 < len(token) <= 4096 or not set(token) <= _TOKEN_CHARS:
        raise ValueError(
            f"{what} must be 1..4096 characters of A-Z a-z 0-9 - . _ ~ + / =, got "
            f"{'a ' + type(token).__name__ if not isinstance(token, str) else f'{len(token)} chars'}"
        )
    return token


def token_from_env() -> str | None:
    """The shared token from ``EDGELESS_TELEMETRY_TOKEN``, None if unset or empty."""
    value = os.environ.get(TOKEN_ENV, "")
    return check_token(value, TOKEN_ENV) if value else None


def load_node_tokens(path: str | Path) -> dict[str, str]:
    """Reads a JSON object ``{"<node_id>": "<token>", ...}``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read node tokens from {str(path)!r}: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{str(path)!r} must hold a JSON object of node_id -> token strings")
    return data


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


class Tokens:
    """Who may send: `node_for(header)` answers for one request."""

    def __init__(self, token: str | None, node_tokens: Mapping[str, str] | None) -> None:
        self._entries: list[tuple[bytes, str | None]] = []
        if token is not None:
            self._entries.append((_digest(check_token(token)), None))
        for node, t in (node_tokens or {}).items():
            if not isinstance(node, str) or not node:
                raise ValueError(f"node_tokens keys must be node ids, got {node!r}")
            self._entries.append((_digest(check_token(t, f"token of node {node!r}")), node))
        digests = [d for d, _ in self._entries]
        if len(set(digests)) != len(digests):
            raise ValueError("every token must be different (shared and per-node ones)")

    @property
    def required(self) -> bool:
        return bool(self._entries)

    def node_for(self, authorization: str | None) -> tuple[bool, str | None]:
        """(allowed, node the body must be for, None meaning any) for an
        ``Authorization`` header value."""
        if not self._entries:
            return True, None
        scheme, _, presented = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False, None
        digest = _digest(presented.strip())
        found: tuple[bool, str | None] = (False, None)
        for known, node in self._entries:  # every one, whatever matched
            if hmac.compare_digest(known, digest):
                found = (True, node)
        return found
