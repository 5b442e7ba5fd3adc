"""Control settings, read once from the environment by the composition root.

Secrets live in files under OA_HOME (created 0600 on first use) unless the environment
names them: the key secret encrypts signing keys at rest; the service token lets sync
servers read the revocation feed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from oa.control.domain.tokens import DEFAULT_AUDIENCES, DEFAULT_TTL_S, check_ttl

MIN_HS256_SECRET_BYTES = 32


@dataclass(frozen=True)
class ControlSettings:
    issuer: str
    key_secret: bytes
    service_token: str
    default_ttl_s: int = DEFAULT_TTL_S
    audiences: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_AUDIENCES))
    session_ttl_s: int = 7 * 24 * 3600
    # A new key is published this long before it first signs, so verifiers see it first.
    rotation_lead_s: float = 30.0
    # The most leeway a verifier may allow; keys stay published this much past their tokens.
    verifier_leeway_s: int = 60
    # How often a running control re-reads the keys (a CLI may have rotated them).
    key_reload_s: float = 5.0
    # Explicit HS256 mode for an issuer that cannot do ES256: no ES256 keys are used or
    # published while it is set.
    hs256_secret: bytes | None = None
    sign_in_max_failures: int = 5
    sign_in_window_s: int = 300
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    # Browser origins allowed to call control (CORS): the dashboard Khala serves signs in
    # here from its own origin. `oa run` names its Khala; OA_CONTROL_CORS_ORIGINS overrides.
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_ttl(self.default_ttl_s)
        if not 0 <= self.verifier_leeway_s <= 60:
            raise ValueError("verifier leeway must be 0..60 s")
        if self.hs256_secret is not None and len(self.hs256_secret) < MIN_HS256_SECRET_BYTES:
            raise ValueError(f"OA_CONTROL_HS256_SECRET must be at least {MIN_HS256_SECRET_BYTES} bytes")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], home: Path, issuer: str, cors_origins: tuple[str, ...] = ()
    ) -> ControlSettings:
        """`issuer` and `cors_origins` are the entry point's defaults; the variables win."""
        hs = env.get("OA_CONTROL_HS256_SECRET")
        cors = env.get("OA_CONTROL_CORS_ORIGINS")
        return cls(
            issuer=env.get("OA_CONTROL_ISSUER", issuer),
            key_secret=key_secret(home, env),
            service_token=service_token(home, env),
            default_ttl_s=int(env.get("OA_CONTROL_TOKEN_TTL", DEFAULT_TTL_S)),
            rotation_lead_s=float(env.get("OA_CONTROL_ROTATION_LEAD_S", 30.0)),
            hs256_secret=hs.encode() if hs else None,
            cors_origins=tuple(o.strip().rstrip("/") for o in cors.split(",") if o.strip())
            if cors is not None
            else cors_origins,
        )


def service_token(home: Path, env: Mapping[str, str] | None = None) -> str:
    """The token sync servers present to read `/api/sync/revocations`."""
    env = os.environ if env is None else env
    return _secret(env.get("OA_CONTROL_SERVICE_TOKEN"), home / "control-service.token")


def key_secret(home: Path, env: Mapping[str, str] | None = None) -> bytes:
    """Encrypts signing keys at rest; every control process of a deployment needs the same one."""
    env = os.environ if env is None else env
    return _secret(env.get("OA_CONTROL_KEY_SECRET"), home / "control-keys.secret").encode()


def _secret(from_env: str | None, path: Path) -> str:
    if from_env:
        return from_env
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(value)
    return value
