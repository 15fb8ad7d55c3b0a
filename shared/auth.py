"""Who may send a command or an ack: JWT bearer tokens in the Kafka header `authorization`.

On when `auth_mode` is `jwt`. A token is verified with the HS256 secret or with the RS256/ES256
public keys of a JWKS file; its tenant claim must equal the message's `meta.tenant` and its
scopes must include what the message needs (`schedules:write`, `schedules:read`,
`actions:ack`). A refusal says why without repeating the token.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt

from shared.settings import Settings

__all__ = [
    "SCOPE_ACK",
    "SCOPE_READ",
    "SCOPE_WRITE",
    "Authenticator",
    "Denied",
    "command_scope",
]

SCOPE_WRITE = "schedules:write"
SCOPE_READ = "schedules:read"
SCOPE_ACK = "actions:ack"
HEADER = "authorization"
MAX_TOKEN_BYTES = 8 * 1024
MIN_HS256_SECRET_BYTES = 32
ASYMMETRIC = ("RS256", "ES256")
CACHE_SIZE = 1024


@dataclass(frozen=True)
class Denied:
    """Why a message is refused: UNAUTHORIZED (no valid token) or FORBIDDEN (not allowed)."""

    code: Literal["UNAUTHORIZED", "FORBIDDEN"]
    message: str
    field: str


def command_scope(command_type: object) -> str:
    return SCOPE_READ if command_type == "schedule.get" else SCOPE_WRITE


def header(headers: Iterable[tuple[str, bytes]], name: str = HEADER) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


class Authenticator:
    """Verifies bearer tokens; verified claims are cached per token until it expires."""

    def __init__(
        self,
        hs256_secret: bytes | None = None,
        jwks: jwt.PyJWKSet | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        tenant_claim: str = "tenant",
        leeway: float = 30.0,
    ) -> None:
        if hs256_secret is None and jwks is None:
            raise ValueError(
                "auth_mode jwt needs auth_hs256_secret or auth_jwks_file "
                "(CHIME_AUTH_HS256_SECRET[_FILE] or CHIME_AUTH_JWKS_FILE)"
            )
        if hs256_secret is not None and len(hs256_secret) < MIN_HS256_SECRET_BYTES:
            raise ValueError(
                f"auth_hs256_secret must be at least {MIN_HS256_SECRET_BYTES} bytes "
                f"(got {len(hs256_secret)})"
            )
        self.secret = hs256_secret
        self.keys: dict[str | None, jwt.PyJWK] = {}
        for key in jwks.keys if jwks else ():
            if key.algorithm_name not in ASYMMETRIC:
                raise ValueError(
                    f"JWKS key {key.key_id!r} is {key.algorithm_name}; only "
                    f"{' and '.join(ASYMMETRIC)} keys are accepted"
                )
            self.keys[key.key_id] = key
        self.issuer, self.audience = issuer, audience
        self.tenant_claim, self.leeway = tenant_claim, leeway
        self._cache: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator | None:
        """None when `auth_mode` is off."""
        if settings.auth_mode == "off":
            return None
        jwks = None
        if settings.auth_jwks_file:
            try:
                jwks = jwt.PyJWKSet.from_json(Path(settings.auth_jwks_file).read_text())
            except (OSError, jwt.PyJWKSetError, jwt.PyJWKError) as exc:
                raise ValueError(f"auth_jwks_file {settings.auth_jwks_file}: {exc}") from None
        secret = settings.auth_hs256_secret
        return cls(
            secret.get_secret_value().encode() if secret else None,
            jwks,
            settings.auth_issuer,
            settings.auth_audience,
            settings.auth_tenant_claim,
            settings.auth_leeway_seconds,
        )

    def check(
        self, headers: Iterable[tuple[str, bytes]], tenant: object, scope: str, what: str
    ) -> Denied | None:
        """None when the message's token may do `what` (needing `scope`) for `tenant`."""
        raw = header(headers)
        if raw is None:
            return _unauthorized(f"{what} carries no `authorization: Bearer <JWT>` header")
        claims = self.claims(raw)
        if isinstance(claims, Denied):
            return claims
        return self.allow(claims, tenant, scope, what)

    def claims(self, raw: bytes) -> dict[str, Any] | Denied:
        """The verified claims of `Bearer <JWT>`, or why it is not acceptable."""
        if len(raw) > MAX_TOKEN_BYTES:
            return _unauthorized(f"the authorization header exceeds {MAX_TOKEN_BYTES} bytes")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return _unauthorized("the authorization header is not ASCII")
        scheme, _, token = text.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized("the authorization header must be `Bearer <JWT>`")
        token = token.strip()
        cached = self._cache.get(token)
        if cached is not None and cached["exp"] + self.leeway > time.time():
            return cached
        claims = self._verify(token)
        if not isinstance(claims, Denied):
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[token] = claims
        return claims

    def allow(self, claims: dict[str, Any], tenant: object, scope: str, what: str) -> Denied | None:
        """None when verified `claims` may do `what` (needing `scope`) for `tenant`."""
        own = claims.get(self.tenant_claim)
        if not isinstance(own, str):
            return Denied(
                "FORBIDDEN",
                f"the token has no {self.tenant_claim!r} claim naming its tenant",
                HEADER,
            )
        if own != tenant:
            return Denied(
                "FORBIDDEN",
                f"the token is for tenant {own!r}, not for meta.tenant {tenant!r}",
                "meta.tenant",
            )
        granted = _scopes(claims)
        if scope not in granted:
            shown = ", ".join(sorted(granted)) or "none"
            return Denied(
                "FORBIDDEN", f"{what} needs scope {scope!r}; the token grants: {shown}", HEADER
            )
        return None

    def _verify(self, token: str) -> dict[str, Any] | Denied:
        try:
            head = jwt.get_unverified_header(token)
            alg = head.get("alg")
            key: Any
            if alg == "HS256" and self.secret is not None:
                key = self.secret
            elif alg in ASYMMETRIC and self.keys:
                jwk = self._key(head.get("kid"))
                if jwk is None or jwk.algorithm_name != alg:
                    return _unauthorized("the token's key id (kid) is not in the JWKS")
                key = jwk.key
            else:
                accepted = (["HS256"] if self.secret else []) + (
                    list(ASYMMETRIC) if self.keys else []
                )
                return _unauthorized(
                    f"token algorithm {alg!r} is not accepted (accepted: {', '.join(accepted)})"
                )
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            return _unauthorized("the token has expired")
        except jwt.InvalidSignatureError:
            return _unauthorized("the token's signature does not verify")
        except jwt.MissingRequiredClaimError as exc:
            return _unauthorized(f"the token has no {exc.claim!r} claim")
        except jwt.InvalidTokenError as exc:
            return _unauthorized(f"the token is not valid: {type(exc).__name__}: {exc}"[:300])

    def _key(self, kid: object) -> jwt.PyJWK | None:
        if kid is None and len(self.keys) == 1:
            return next(iter(self.keys.values()))
        return self.keys.get(kid) if isinstance(kid, str) else None


def _unauthorized(message: str) -> Denied:
    return Denied("UNAUTHORIZED", message, HEADER)


def _scopes(claims: dict[str, Any]) -> set[str]:
    granted: set[str] = set()
    for name in ("scope", "scp", "scopes"):
        value = claims.get(name)
        if isinstance(value, str):
            granted.update(value.split())
        elif isinstance(value, list):
            granted.update(v for v in value if isinstance(v, str))
    return granted
