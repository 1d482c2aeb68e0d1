"""RS256 tokens signed by a key kept in the data dir, and their verification."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kumo.identity.tls import _write_private

ACCESS_LIFETIME = 3600
REFRESH_LIFETIME = 90 * 24 * 3600


class TokenError(Exception):
    """A token the front door refuses; `code` is the ARM error code Azure uses for the reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def normalise_audience(aud: str) -> str:
    return aud.strip().rstrip("/").lower()


class TokenSigner:
    def __init__(self, key_path: Path) -> None:
        if key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
        self._key = key
        self._public = key.public_key()
        der = self._public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = _b64url(hashlib.sha256(der).digest())[:27]

    def jwks(self) -> dict[str, Any]:
        numbers = self._public.public_numbers()

        def enc(n: int) -> str:
            return _b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))

        return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                          "n": enc(numbers.n), "e": enc(numbers.e)}]}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def issue(self, *, issuer: str, tenant_id: str, object_id: str, app_id: str, audience: str,
              lifetime: int = ACCESS_LIFETIME, extra: dict[str, Any] | None = None) -> tuple[str, int]:
        now = int(time.time())
        exp = now + lifetime
        claims = {
            "aud": audience, "iss": issuer, "iat": now, "nbf": now, "exp": exp,
            "tid": tenant_id, "oid": object_id, "sub": object_id, "appid": app_id, "azp": app_id,
            "ver": "2.0", "uti": uuid.uuid4().hex,
        }
        claims.update(extra or {})
        return self.sign(claims), exp

    def verify(self, token: str, audiences: set[str] | None) -> dict[str, Any]:
        """Check signature, expiry and (when given) audience. Raises TokenError with Azure's codes."""
        try:
            claims = jwt.decode(token, self._public, algorithms=["RS256"], leeway=30,
                                options={"verify_aud": False, "require": ["exp", "tid", "oid", "aud"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("ExpiredAuthenticationToken",
                             "The access token expiry UTC time is earlier than current UTC time.") from None
        except jwt.PyJWTError as e:
            raise TokenError("InvalidAuthenticationToken",
                             f"The access token is invalid: {e}.") from None
        if audiences is not None and normalise_audience(str(claims["aud"])) not in audiences:
            raise TokenError("InvalidAuthenticationTokenAudience",
                             f"The access token has been obtained for wrong audience or resource "
                             f"'{claims['aud']}'. It should exactly match with one of the allowed audiences.")
        if claims.get("typ") == "refresh":
            raise TokenError("InvalidAuthenticationToken", "A refresh token cannot be used as an access token.")
        return claims

    def verify_refresh(self, token: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(token, self._public, algorithms=["RS256"], options={"verify_aud": False})
        except jwt.PyJWTError as e:
            raise TokenError("invalid_grant", f"The refresh token is invalid: {e}.") from None
        if claims.get("typ") != "refresh":
            raise TokenError("invalid_grant", "The token is not a refresh token.")
        return claims
