"""Standard Webhooks signatures (https://www.standardwebhooks.com/, "Signature scheme"):

    webhook-id:        the message id, the same on every retry of one message
    webhook-timestamp: integer seconds since the epoch, when this attempt was signed
    webhook-signature: "v1," + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))

The key is the secret's bytes: a secret "whsec_<base64>" is the base64-decoded part after the
prefix (the specification's format); any other secret is used as its UTF-8 bytes.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature value ("v1,<base64>") of one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body)}


def verify(secret: str, headers: dict[str, str], body: bytes, *, now: int | None = None,
           tolerance: int = 300) -> bool:
    """Whether the headers carry a valid signature of body (any of the space-separated v1
    signatures), signed within tolerance seconds of now (when now is given)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (lowered.get("webhook-id"), lowered.get("webhook-timestamp"),
                                 lowered.get("webhook-signature"))
    if not msg_id or not stamp or not signatures or not stamp.isdigit():
        return False
    if now is not None and abs(now - int(stamp)) > tolerance:
        return False
    expected = sign(secret, msg_id, int(stamp), body)
    return any(hmac.compare_digest(expected, s) for s in signatures.split())
