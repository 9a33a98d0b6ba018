"""The issuance profile rules (contracts.profiles), pure: may this CSR be signed under
this profile by this CA, and with which key usages and validity. No I/O, ``now``
injected; each refusal is one line naming the rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contracts.ca import CAView
from contracts.keys import KeyType
from contracts.profiles import ExtendedKeyUsage, KeyUsage, ProfileSpec, SanKind

__all__ = ["LeafUsage", "ProfileRefused", "csr_key_type", "leaf_usage"]

_EKU = {
    ExtendedKeyUsage.SERVER_AUTH: ExtendedKeyUsageOID.SERVER_AUTH,
    ExtendedKeyUsage.CLIENT_AUTH: ExtendedKeyUsageOID.CLIENT_AUTH,
    ExtendedKeyUsage.CODE_SIGNING: ExtendedKeyUsageOID.CODE_SIGNING,
    ExtendedKeyUsage.EMAIL_PROTECTION: ExtendedKeyUsageOID.EMAIL_PROTECTION,
    ExtendedKeyUsage.TIME_STAMPING: ExtendedKeyUsageOID.TIME_STAMPING,
}
_CURVES = {"secp256r1": KeyType.EC_P256, "secp384r1": KeyType.EC_P384}


class ProfileRefused(ValueError):  # noqa: N818 - a domain outcome, mapped to 'forbidden'
    """The CSR asks for what the profile does not allow."""


@dataclass(frozen=True, slots=True)
class LeafUsage:
    """What a profile puts in a leaf, and for how long it is valid."""

    profile: str
    extended_key_usage: tuple[ExtendedKeyUsage, ...]
    key_usage: frozenset[KeyUsage]
    validity: timedelta

    def extended_key_usage_extension(self) -> x509.ExtendedKeyUsage:
        return x509.ExtendedKeyUsage([_EKU[u] for u in self.extended_key_usage])


def csr_key_type(public_key: object) -> str:
    """The CSR key's type as profiles name it, or a description of what it is."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa-{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        known = _CURVES.get(public_key.curve.name)
        return known.value if known else f"ec-{public_key.curve.name}"
    return type(public_key).__name__.removeprefix("_")


def _san_entries(
    csr: x509.CertificateSigningRequest,
) -> list[tuple[SanKind | None, str]]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    entries: list[tuple[SanKind | None, str]] = []
    for name in san.value:
        if isinstance(name, x509.DNSName):
            entries.append((SanKind.DNS, name.value))
        elif isinstance(name, x509.IPAddress):
            entries.append((SanKind.IP, str(name.value)))
        elif isinstance(name, x509.UniformResourceIdentifier):
            entries.append((SanKind.URI, name.value))
        elif isinstance(name, x509.RFC822Name):
            entries.append((SanKind.EMAIL, name.value))
        else:
            entries.append((None, type(name).__name__))
    return entries


def _san_refusal(
    profile: ProfileSpec, csr: x509.CertificateSigningRequest
) -> str | None:
    entries = _san_entries(csr)
    if len(entries) > profile.max_sans:
        return f"the CSR asks for {len(entries)} subjectAltNames; at most {profile.max_sans}"
    for kind, value in entries:
        if kind is None or kind not in profile.san_kinds:
            allowed = ", ".join(k.value for k in profile.san_kinds) or "none"
            shown = kind.value if kind else value
            return f"subjectAltName kind {shown} is not allowed (allowed: {allowed})"
        pattern = profile.san_pattern(kind)
        if pattern is not None and not re.fullmatch(pattern, value):
            return f"subjectAltName {kind.value} {value!r} does not match {pattern!r}"
    return None


def _subject_refusal(
    profile: ProfileSpec, csr: x509.CertificateSigningRequest, ca: CAView
) -> str | None:
    # RFC 5280 §6.1: a leaf named like its issuer looks self-issued to path building.
    if csr.subject.rfc4514_string() == ca.subject:
        return f"the CSR subject is the subject of CA {ca.name!r}"
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else ""
    pattern = profile.common_name_pattern
    if pattern is not None and not re.fullmatch(pattern, common_name):
        return f"the common name {common_name!r} does not match {pattern!r}"
    return None


def _validity(
    profile: ProfileSpec, ca: CAView, now: datetime, days: int, *, cap: bool
) -> timedelta:
    asked = timedelta(days=days)
    limit = min(timedelta(days=profile.max_validity_days), ca.not_after - now)
    if asked <= limit:
        return asked
    if cap:
        return limit
    return_limit = (
        f"{profile.max_validity_days} days (profile {profile.name!r})"
        if timedelta(days=profile.max_validity_days) <= ca.not_after - now
        else f"until {ca.not_after.isoformat()} (CA {ca.name!r} expires)"
    )
    raise ProfileRefused(
        f"a validity of {days} days is longer than allowed: at most {return_limit};"
        " ask for less, or accept capping (--cap-validity)"
    )


def leaf_usage(
    profile: ProfileSpec,
    csr: x509.CertificateSigningRequest,
    ca: CAView,
    now: datetime,
    *,
    validity_days: int,
    cap: bool,
) -> LeafUsage:
    """The leaf ``profile`` gives this CSR from ``ca``, or ``ProfileRefused``."""
    key_type = csr_key_type(csr.public_key())
    if key_type not in {t.value for t in profile.key_types}:
        allowed = ", ".join(t.value for t in profile.key_types)
        raise ProfileRefused(
            f"profile {profile.name!r} does not allow {key_type} keys (allowed: {allowed})"
        )
    if reason := _subject_refusal(profile, csr, ca) or _san_refusal(profile, csr):
        raise ProfileRefused(f"profile {profile.name!r}: {reason}")
    return LeafUsage(
        profile.name,
        tuple(profile.extended_key_usage),
        frozenset(profile.key_usage),
        _validity(profile, ca, now, validity_days, cap=cap),
    )
