"""Bearer tokens between nodes and the collector: checking one, reading
them from the environment or a file (the CLI). The collector checks
presented tokens in Rust (`rust/collector/tokens.rs`: SHA-256 digests,
compared in constant time with every one)."""

from __future__ import annotations

import json
import os
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
