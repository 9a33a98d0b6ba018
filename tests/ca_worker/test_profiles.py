"""The issuance profile rules (ca_worker.profiles), pure: no I/O, ``now`` fixed."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca_worker.profiles import ProfileRefused, leaf_usage
from contracts.ca import CAView, CertificateStatus
from contracts.keys import KeyType
from contracts.profiles import BUILT_IN_PROFILES, ProfileSpec, SanKind

NOW = datetime(2030, 1, 1, tzinfo=UTC)
CLIENT = BUILT_IN_PROFILES["client"]
SERVER = BUILT_IN_PROFILES["server"]
CA = CAView(
    name="issuing",
    parent=None,
    internal=False,
    key_type=KeyType.EC_P256,
    key_id="k",
    engine="gopem",
    serial="0a",
    subject="O=Lamassu PKI,CN=issuing",
    status=CertificateStatus.ACTIVE,
    not_before=NOW - timedelta(days=1),
    not_after=NOW + timedelta(days=1000),
    certificate_pem="-",
)
KEY = ec.generate_private_key(ec.SECP256R1())


def csr(
    names: list[x509.GeneralName] | None = None,
    *,
    subject: x509.Name | None = None,
    key: ec.EllipticCurvePrivateKey = KEY,
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-1")])
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def refusal(profile: ProfileSpec, request: x509.CertificateSigningRequest) -> str:
    with pytest.raises(ProfileRefused) as caught:
        leaf_usage(profile, request, CA, NOW, validity_days=30, cap=False)
    return str(caught.value)


@pytest.mark.parametrize(
    ("profile", "names", "expected"),
    [
        (CLIENT, [x509.DNSName("*.example.com")], "does not match"),
        (CLIENT, [x509.IPAddress(ipaddress.ip_address("10.0.0.1"))], "kind ip"),
        (SERVER, [x509.UniformResourceIdentifier("https://x")], "kind uri"),
        (SERVER, [x509.RFC822Name("a@b.example")], "kind email"),
        (
            SERVER,
            [x509.DNSName(f"h{i}.example") for i in range(1000)],
            "1000 subjectAltNames",
        ),
        (
            SERVER,
            [
                x509.DirectoryName(
                    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
                )
            ],
            "DirectoryName",
        ),
    ],
    ids=["wildcard", "ip-in-client", "uri", "email", "thousand-sans", "directory-name"],
)
def test_san_rules(
    profile: ProfileSpec, names: list[x509.GeneralName], expected: str
) -> None:
    """SAN kinds outside the profile, wildcards, and too many entries are refused."""
    assert expected in refusal(profile, csr(names))


def test_server_profile_allows_dns_and_ip_and_sets_server_auth() -> None:
    """A server CSR with a host name and an IP gets serverAuth, and its validity."""
    usage = leaf_usage(
        SERVER,
        csr(
            [
                x509.DNSName("gw.example"),
                x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
            ]
        ),
        CA,
        NOW,
        validity_days=90,
        cap=False,
    )
    assert [ExtendedKeyUsageOID.SERVER_AUTH] == list(
        usage.extended_key_usage_extension()
    )
    assert timedelta(days=90) == usage.validity


def test_san_pattern_and_common_name_pattern() -> None:
    """A profile's own patterns: entries and the CN must match them in full."""
    profile = ProfileSpec(
        name="plant",
        san_patterns={SanKind.DNS: r"[a-z0-9-]+\.plant\.example"},
        common_name_pattern=r"pump-\d{4}",
    )
    assert "does not match" in refusal(profile, csr([x509.DNSName("x.other.example")]))
    named = csr(subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "valve-1")]))
    assert "common name 'valve-1'" in refusal(profile, named)
    ok = csr(
        [x509.DNSName("p1.plant.example")],
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pump-0001")]),
    )
    assert (
        "plant" == leaf_usage(profile, ok, CA, NOW, validity_days=1, cap=False).profile
    )


def test_subject_equal_to_the_issuer_is_refused() -> None:
    """A leaf named like its CA is refused (path building would take it for the CA)."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "issuing"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lamassu PKI"),
        ]
    )
    assert "subject of CA 'issuing'" in refusal(CLIENT, csr(subject=subject))


def test_key_types() -> None:
    """P-192 is not among the default key types; a profile may narrow them."""
    p192 = csr(key=ec.generate_private_key(ec.SECP192R1()))
    assert "ec-secp192r1" in refusal(CLIENT, p192)
    only_p384 = ProfileSpec(name="p384", key_types=[KeyType.EC_P384])
    assert "does not allow ec-p256" in refusal(only_p384, csr())


@pytest.mark.parametrize(
    ("days", "cap", "expected"),
    [
        (365, False, timedelta(days=365)),
        (400, False, "at most 365 days (profile 'client')"),
        (400, True, timedelta(days=365)),
    ],
    ids=["inside", "beyond-profile", "beyond-profile-capped"],
)
def test_validity_against_the_profile(
    days: int,
    cap: bool,
    expected: timedelta | str,
) -> None:
    """Beyond the profile's maximum: refused, or cut when the request accepts it."""
    if isinstance(expected, str):
        with pytest.raises(ProfileRefused, match="accept capping"):
            leaf_usage(CLIENT, csr(), CA, NOW, validity_days=days, cap=cap)
        assert expected in refusal_for_days(days)
    else:
        assert (
            expected
            == leaf_usage(CLIENT, csr(), CA, NOW, validity_days=days, cap=cap).validity
        )


def refusal_for_days(days: int) -> str:
    with pytest.raises(ProfileRefused) as caught:
        leaf_usage(CLIENT, csr(), CA, NOW, validity_days=days, cap=False)
    return str(caught.value)


def test_validity_against_the_issuer() -> None:
    """Beyond the CA's own expiry: refused naming it, or cut to it."""
    long_lived = ProfileSpec(name="long", max_validity_days=5000)
    with pytest.raises(ProfileRefused, match="CA 'issuing' expires"):
        leaf_usage(long_lived, csr(), CA, NOW, validity_days=2000, cap=False)
    capped = leaf_usage(long_lived, csr(), CA, NOW, validity_days=2000, cap=True)
    assert CA.not_after - NOW == capped.validity


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"san_patterns": {"dns": "("}}, "is not a regular expression"),
        ({"common_name_pattern": "x" * 600}, "at most 512"),
        ({"extended_key_usage": []}, "at least 1 item"),
        ({"name": "no spaces"}, "String should match pattern"),
    ],
    ids=["bad-regex", "long-pattern", "no-eku", "bad-name"],
)
def test_invalid_profiles(fields: dict[str, object], message: str) -> None:
    """A profile that cannot work is refused when it is made."""
    with pytest.raises(ValueError, match=message):
        ProfileSpec.model_validate({"name": "p"} | fields)
