"""Issuance profiles (issue 14): what a leaf certificate may say, named and stored by
the CA worker, chosen per CA with a per-DMS override or per ``cert sign``.

A profile sets the key usage and extended key usage of the leaf (RFC 5280 §4.2.1.3,
§4.2.1.12), the subjectAltName kinds a CSR may ask for with an optional pattern each
(§4.2.1.6), a pattern for the subject's common name, the longest validity, and the
key types a CSR may carry. ``client`` and ``server`` are built in.
"""

from __future__ import annotations

import enum
import re
from typing import ClassVar

from pydantic import AwareDatetime, Field, field_validator

from contracts.keys import KeyType
from contracts.message import Message, Model
from contracts.pki import NAME_PATTERN as _NAME

__all__ = [
    "BUILT_IN_PROFILES",
    "DEFAULT_PROFILE",
    "CreateProfile",
    "ExtendedKeyUsage",
    "GetProfile",
    "KeyUsage",
    "ListProfiles",
    "ProfileSpec",
    "ProfileView",
    "Profiles",
    "SanKind",
]

# A DNS name of letters, digits and hyphens (RFC 1035 §2.3.1), no wildcard: the
# pattern of a kind a profile allows without giving its own.
_HOSTNAME = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"


class SanKind(enum.StrEnum):
    """subjectAltName entries a CSR may ask for (RFC 5280 §4.2.1.6)."""

    DNS = "dns"
    IP = "ip"
    URI = "uri"
    EMAIL = "email"


class KeyUsage(enum.StrEnum):
    """Key usages a profile adds to digitalSignature (RSA keys also get
    keyEncipherment, RFC 5246 §7.4.7.1)."""

    KEY_AGREEMENT = "key_agreement"
    CONTENT_COMMITMENT = "content_commitment"
    DATA_ENCIPHERMENT = "data_encipherment"


class ExtendedKeyUsage(enum.StrEnum):
    """RFC 5280 §4.2.1.12 purposes."""

    SERVER_AUTH = "server_auth"
    CLIENT_AUTH = "client_auth"
    CODE_SIGNING = "code_signing"
    EMAIL_PROTECTION = "email_protection"
    TIME_STAMPING = "time_stamping"


class ProfileSpec(Model):
    """What a profile allows; every field has the safe default."""

    name: str = Field(pattern=_NAME)
    key_usage: list[KeyUsage] = Field(default_factory=list)
    extended_key_usage: list[ExtendedKeyUsage] = Field(
        default_factory=lambda: [ExtendedKeyUsage.CLIENT_AUTH], min_length=1
    )
    san_kinds: list[SanKind] = Field(default_factory=lambda: [SanKind.DNS])
    # A regular expression each entry of that kind must match in full.
    san_patterns: dict[SanKind, str] = Field(default_factory=dict)
    max_sans: int = Field(default=8, ge=0, le=100)
    common_name_pattern: str | None = None
    max_validity_days: int = Field(default=365, gt=0, le=36500)
    key_types: list[KeyType] = Field(
        default_factory=lambda: list(KeyType), min_length=1
    )

    @field_validator("common_name_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            _compile(pattern)
        return pattern

    @field_validator("san_patterns")
    @classmethod
    def _all_compile(cls, patterns: dict[SanKind, str]) -> dict[SanKind, str]:
        for pattern in patterns.values():
            _compile(pattern)
        return patterns

    def san_pattern(self, kind: SanKind) -> str | None:
        """The pattern entries of ``kind`` must match; DNS names default to host names."""
        return self.san_patterns.get(kind, _HOSTNAME if kind is SanKind.DNS else None)


def _compile(pattern: str) -> None:
    if len(pattern) > 512:
        raise ValueError("a pattern is at most 512 characters")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None


class CreateProfile(ProfileSpec, Message):
    """Store a named profile; a built-in name or an existing one is a conflict."""

    TYPE: ClassVar[str] = "profile.create"


class GetProfile(Message):
    TYPE: ClassVar[str] = "profile.get"
    name: str = Field(min_length=1, max_length=64)


class ListProfiles(Message):
    TYPE: ClassVar[str] = "profile.list"


class ProfileView(ProfileSpec):
    """A profile as replies show it."""

    built_in: bool = False
    created_at: AwareDatetime | None = None


class Profiles(Model):
    items: list[ProfileView]


DEFAULT_PROFILE = "client"

# Devices authenticate as TLS clients; servers need serverAuth and may carry IPs.
BUILT_IN_PROFILES: dict[str, ProfileView] = {
    "client": ProfileView(name="client", built_in=True),
    "server": ProfileView(
        name="server",
        extended_key_usage=[ExtendedKeyUsage.SERVER_AUTH],
        san_kinds=[SanKind.DNS, SanKind.IP],
        max_validity_days=398,
        built_in=True,
    ),
}
