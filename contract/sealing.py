"""End-to-end sealing of link payloads (rule F2): NaCl box, X25519 + XSalsa20-Poly1305.

Per attempt the dispatcher makes an ephemeral key pair and seals the request body to the
provider's registered key; the provider seals each chunk with its long-term key to that
ephemeral key. Anything that does not open with exactly those keys is a protocol violation.
"""

from __future__ import annotations

from dataclasses import dataclass

from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey

KEY_BYTES = 32


class SealError(ValueError):
    """A payload did not open: wrong key, tampered, or plaintext."""


@dataclass(frozen=True)
class KeyPair:
    secret: PrivateKey

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(PrivateKey.generate())

    @property
    def public_bytes(self) -> bytes:
        return bytes(self.secret.public_key)


class SealedChannel:
    """One direction-agnostic box between our secret key and the peer's public key."""

    __slots__ = ("_box",)

    def __init__(self, ours: KeyPair, peer_public: bytes) -> None:
        if len(peer_public) != KEY_BYTES:
            raise SealError(f"peer public key must be {KEY_BYTES} bytes")
        self._box = Box(ours.secret, PublicKey(peer_public))

    def seal(self, plaintext: bytes) -> bytes:
        return bytes(self._box.encrypt(plaintext))

    def open(self, sealed: bytes) -> bytes:
        try:
            return bytes(self._box.decrypt(sealed))
        except (CryptoError, ValueError, TypeError) as exc:
            raise SealError("payload is not sealed for this session") from exc
