"""The vocabulary of key types a CA key may use; shared by contracts and engines, no I/O."""

from __future__ import annotations

import enum

__all__ = ["KeyType"]


class KeyType(enum.StrEnum):
    """Key algorithms a CA key may use (EC curves per RFC 5480, RSA per RFC 8017)."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    @property
    def is_rsa(self) -> bool:
        return self.value.startswith("rsa-")

    @property
    def rsa_bits(self) -> int:
        if not self.is_rsa:
            raise ValueError(f"{self.value} is not an RSA key type")
        return int(self.value.removeprefix("rsa-"))
