"""Bearer tokens: every way a token can be wrong is refused with the reason, never the token."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.auth import SCOPE_ACK, SCOPE_READ, SCOPE_WRITE, Authenticator, command_scope
from shared.settings import Settings

SECRET = b"s" * 32
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwks_file(tmp_path: Path) -> Path:
    keys = [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key())), "kid": "rsa-1"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key())), "kid": "ec-1"},
    ]
    for key, alg in zip(keys, ("RS256", "ES256"), strict=True):
        key["alg"] = alg
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    return path


def claims(**over: Any) -> dict[str, Any]:
    return {
        "tenant": "acct-1",
        "scope": "schedules:write schedules:read",
        "exp": time.time() + 60,
    } | over


def bearer(token: str) -> list[tuple[str, bytes]]:
    return [("authorization", f"Bearer {token}".encode())]


def hs(**over: Any) -> str:
    return jwt.encode(claims(**over), SECRET.decode(), algorithm="HS256")


def tampered() -> str:
    """An RS256 token for acct-1 whose payload was rewritten to acct-2, signature kept."""
    head, _, signature = jwt.encode(
        claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"}
    ).split(".")
    body = base64.urlsafe_b64encode(json.dumps(claims(tenant="acct-2")).encode()).rstrip(b"=")
    return f"{head}.{body.decode()}.{signature}"


@pytest.fixture
def auth(tmp_path: Path) -> Authenticator:
    settings = Settings(
        auth_mode="jwt",
        auth_hs256_secret=SECRET.decode(),
        auth_jwks_file=str(jwks_file(tmp_path)),
    )
    made = Authenticator.from_settings(settings)
    assert made is not None
    return made


def test_off_means_no_authenticator() -> None:
    assert Authenticator.from_settings(Settings()) is None


def test_valid_tokens_of_every_algorithm(auth: Authenticator) -> None:
    tokens = [
        hs(),
        jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"}),
        jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"}),
    ]
    for token in tokens:
        assert auth.check(bearer(token), "acct-1", SCOPE_WRITE, "schedule.create") is None
        assert auth.check(bearer(token), "acct-1", SCOPE_READ, "schedule.get") is None


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([], "carries no `authorization: Bearer <JWT>` header"),
        ([("authorization", b"Basic dXNlcjpwYXNz")], "must be `Bearer <JWT>`"),
        ([("authorization", b"Bearer ")], "must be `Bearer <JWT>`"),
        ([("authorization", b"Bearer \xff\xfe")], "not ASCII"),
        ([("authorization", b"Bearer " + b"a" * 9000)], "exceeds"),
        (bearer("not-a-jwt"), "not valid"),
        (bearer(hs(exp=time.time() - 3600)), "expired"),
        (bearer(jwt.encode(claims(), "x" * 32, algorithm="HS256")), "signature does not verify"),
        (bearer(jwt.encode({"tenant": "acct-1"}, SECRET.decode(), algorithm="HS256")), "'exp'"),
        (bearer(jwt.encode(claims(), None, algorithm="none")), "algorithm 'none'"),
        (bearer(jwt.encode(claims(), "k" * 64, algorithm="HS512")), "algorithm 'HS512'"),
        (
            bearer(jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "other"})),
            "kid",
        ),
        (
            # an ES256 token claiming the RSA key's id
            bearer(jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "rsa-1"})),
            "kid",
        ),
        (bearer(tampered()), "signature does not verify"),
        (bearer(hs(nbf=time.time() + 3600)), "not valid"),
    ],
)
def test_unauthorized(auth: Authenticator, headers: list, reason: str) -> None:
    denied = auth.check(headers, "acct-1", SCOPE_WRITE, "schedule.create")
    assert denied is not None
    assert denied.code == "UNAUTHORIZED"
    assert reason in denied.message
    token = headers[0][1].decode("latin-1").removeprefix("Bearer ") if headers else ""
    if len(token) > 20:
        assert token not in denied.message
    again = auth.check(headers, "acct-1", SCOPE_WRITE, "schedule.create")
    assert again == denied  # a refused token is not remembered as verified


def test_forbidden_other_tenant_and_missing_scope(auth: Authenticator) -> None:
    denied = auth.check(bearer(hs()), "acct-2", SCOPE_WRITE, "schedule.create")
    assert denied is not None and denied.code == "FORBIDDEN" and denied.field == "meta.tenant"
    assert "'acct-1'" in denied.message and "'acct-2'" in denied.message
    read_only = hs(scope="schedules:read")
    assert auth.check(bearer(read_only), "acct-1", SCOPE_READ, "schedule.get") is None
    denied = auth.check(bearer(read_only), "acct-1", SCOPE_WRITE, "schedule.delete")
    assert denied is not None and denied.code == "FORBIDDEN"
    assert "schedule.delete needs scope 'schedules:write'" in denied.message
    denied = auth.check(bearer(hs(scope=None)), "acct-1", SCOPE_ACK, "action.ack")
    assert denied is not None and "grants: none" in denied.message
    no_tenant = jwt.encode({"scope": SCOPE_WRITE, "exp": time.time() + 60}, SECRET.decode())
    denied = auth.check(bearer(no_tenant), "acct-1", SCOPE_WRITE, "schedule.create")
    assert denied is not None and denied.code == "FORBIDDEN" and "'tenant' claim" in denied.message


def test_scope_forms_and_header_case(auth: Authenticator) -> None:
    for form in ({"scp": [SCOPE_ACK]}, {"scopes": [SCOPE_ACK]}, {"scope": f"x {SCOPE_ACK}"}):
        token = jwt.encode(claims(scope=None) | form, SECRET.decode(), algorithm="HS256")
        headers = [("Authorization", f"bearer {token}".encode())]
        assert auth.check(headers, "acct-1", SCOPE_ACK, "action.ack") is None


def test_a_token_without_kid_needs_a_single_key(tmp_path: Path) -> None:
    unnamed = jwt.encode(claims(), RSA_KEY, algorithm="RS256")  # no kid in its header
    one = tmp_path / "one.json"
    key = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key())) | {"alg": "RS256"}
    one.write_text(json.dumps({"keys": [key]}))
    single = Authenticator.from_settings(Settings(auth_mode="jwt", auth_jwks_file=str(one)))
    assert single is not None
    assert single.check(bearer(unnamed), "acct-1", SCOPE_WRITE, "x") is None
    several = Authenticator.from_settings(
        Settings(auth_mode="jwt", auth_jwks_file=str(jwks_file(tmp_path)))
    )
    assert several is not None
    denied = several.check(bearer(unnamed), "acct-1", SCOPE_WRITE, "x")
    assert denied is not None and "kid" in denied.message  # which key? it cannot guess


def test_issuer_and_audience_when_configured() -> None:
    auth = Authenticator(SECRET, issuer="https://idp", audience="chime")
    good = jwt.encode(claims(iss="https://idp", aud="chime"), SECRET.decode())
    assert auth.check(bearer(good), "acct-1", SCOPE_WRITE, "x") is None
    for bad in (claims(iss="https://evil", aud="chime"), claims(iss="https://idp", aud="other")):
        denied = auth.check(bearer(jwt.encode(bad, SECRET.decode())), "acct-1", SCOPE_WRITE, "x")
        assert denied is not None and denied.code == "UNAUTHORIZED"


def test_cached_token_still_expires(auth: Authenticator, monkeypatch: pytest.MonkeyPatch) -> None:
    token = hs(exp=time.time() + 5)
    assert auth.check(bearer(token), "acct-1", SCOPE_WRITE, "x") is None
    later = time.time() + 3600
    monkeypatch.setattr("shared.auth.time.time", lambda: later)
    monkeypatch.setattr("jwt.api_jwt.datetime", _FrozenDatetime(later), raising=False)
    denied = auth.check(bearer(token), "acct-1", SCOPE_WRITE, "x")
    assert denied is not None and denied.code == "UNAUTHORIZED"


class _FrozenDatetime:
    """jwt.api_jwt reads the current time through datetime.now(tz=timezone.utc)."""

    def __init__(self, at: float) -> None:
        from datetime import datetime

        self._datetime = datetime
        self._at = at

    def now(self, tz: Any = None) -> Any:
        return self._datetime.fromtimestamp(self._at, tz)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._datetime, name)


def test_misconfiguration_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs auth_hs256_secret or auth_jwks_file"):
        Authenticator.from_settings(Settings(auth_mode="jwt"))
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Authenticator.from_settings(Settings(auth_mode="jwt", auth_hs256_secret="short"))
    hmac_jwks = tmp_path / "hmac.json"
    hmac_jwks.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}]}))
    with pytest.raises(ValueError, match="only RS256 and ES256"):
        Authenticator.from_settings(Settings(auth_mode="jwt", auth_jwks_file=str(hmac_jwks)))
    with pytest.raises(ValueError, match="auth_jwks_file"):
        Authenticator.from_settings(Settings(auth_mode="jwt", auth_jwks_file=str(tmp_path / "x")))


def test_command_scope() -> None:
    assert command_scope("schedule.get") == SCOPE_READ
    assert command_scope("schedule.create") == SCOPE_WRITE
    assert command_scope(None) == SCOPE_WRITE
