"""The EST wire layer: request bodies parsed, responses rendered, checked against OpenSSL."""

from __future__ import annotations

import base64
import email
import email.policy
import functools
import shutil
import subprocess
import textwrap
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from est_gateway.errors import (
    BadRequest,
    EstError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from est_gateway.wire import (
    CERTS_ONLY,
    Operation,
    client_cert_from_header,
    decode_pkcs10_body,
    encode_certs_only,
    encode_csrattrs,
    encode_pem_chain,
    encode_serverkeygen,
    negotiate,
    parse_est_path,
)
from tests.est_client import decode_certs_only, decode_serverkeygen

NOW = datetime(2025, 6, 1, tzinfo=UTC)
OPENSSL = shutil.which("openssl")
DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM


@functools.cache
def _key(name: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@functools.cache
def _csr(common_name: str = "slot1:dev-0001") -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name))
    return builder.sign(_key("device"), hashes.SHA256())


def _certificate(subject: str, key: str, issuer: str | None = None) -> x509.Certificate:
    issuer_key = _key(key if issuer is None else issuer)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(subject if issuer is None else issuer))
        .public_key(_key(key).public_key())
        .serial_number(int.from_bytes(subject.encode(), "big"))
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=30))
        .sign(issuer_key, hashes.SHA256())
    )


@functools.cache
def _root() -> x509.Certificate:
    return _certificate("root-ca", "root-ca")


@functools.cache
def _leaf() -> x509.Certificate:
    return _certificate("dev-0001", "device", issuer="root-ca")


def _openssl(*args: str, stdin: bytes = b"") -> bytes:
    # A missing tool fails, never skips: scripts/services.sh installs it.
    if OPENSSL is None:
        pytest.fail("no openssl command: run scripts/services.sh all")
    return subprocess.run(
        [OPENSSL, *args], input=stdin, capture_output=True, check=True, timeout=30
    ).stdout


def _wrap(text: str, width: int, eol: str) -> bytes:
    return "".join(line + eol for line in textwrap.wrap(text, width)).encode()


def _csr_bodies() -> dict[str, bytes]:
    der = _csr().public_bytes(DER)
    b64 = base64.b64encode(der).decode()
    pem = _csr().public_bytes(PEM)
    return {
        "one-line": b64.encode(),
        "lf-64": _wrap(b64, 64, "\n"),
        "crlf-76": _wrap(b64, 76, "\r\n"),
        "spaces-tabs": b"  " + " \t ".join(textwrap.wrap(b64, 10)).encode() + b" \n",
        "no-padding": b64.rstrip("=").encode(),
        "pem": pem,
        "pem-crlf": pem.replace(b"\n", b"\r\n"),
        "pem-new": pem.replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"),
        "pem-with-text": b"Subject: dev-0001\n" + pem,
        "raw-der": der,
    }


@pytest.mark.parametrize("body_id", list(_csr_bodies()), ids=list(_csr_bodies()))
def test_csr_body_layouts_decode(body_id: str) -> None:
    """Base64 in any layout, PEM armour and raw DER all yield the same CSR."""
    body = _csr_bodies()[body_id]
    actual = decode_pkcs10_body(body, "application/pkcs10")
    assert _csr().public_bytes(DER) == actual.public_bytes(DER)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/pkcs10",
        "Application/PKCS10",
        "application/pkcs10; charset=binary",
        " application/pkcs10 ;name=csr.p10",
    ],
    ids=["plain", "mixed-case", "parameter", "spaces-and-parameter"],
)
def test_pkcs10_content_types_accepted(content_type: str) -> None:
    """The PKCS#10 media type is matched case-insensitively, parameters ignored."""
    body = base64.b64encode(_csr().public_bytes(DER))
    actual = decode_pkcs10_body(body, content_type)
    assert _csr().subject == actual.subject


@pytest.mark.parametrize(
    ("content_type", "expected_reason"),
    [
        (None, "the Content-Type must be application/pkcs10, got none"),
        (
            "application/octet-stream",
            "the Content-Type must be application/pkcs10, got 'application/octet-stream'",
        ),
        (
            "application/pkcs10x",
            "the Content-Type must be application/pkcs10, got 'application/pkcs10x'",
        ),
        (
            "text/plain\r\nX: y",
            "the Content-Type must be application/pkcs10, got 'text/plain\\r\\nX: y'",
        ),
    ],
    ids=["missing", "octet-stream", "near-miss", "header-injection"],
)
def test_wrong_content_type_is_415(
    content_type: str | None, expected_reason: str
) -> None:
    """Anything but application/pkcs10 is refused with 415 before the body is read."""
    with pytest.raises(UnsupportedMediaType) as caught:
        decode_pkcs10_body(b"", content_type)
    assert (415, expected_reason) == (caught.value.status, caught.value.reason)


def _tampered_csr() -> bytes:
    der = _csr("slot1:dev-0001").public_bytes(DER)
    return base64.b64encode(der.replace(b"dev-0001", b"dev-0002"))


@pytest.mark.parametrize(
    ("body", "expected_reason"),
    [
        (b"", "the request body is empty"),
        (b" \r\n\t", "the request body is empty"),
        (b"not base64 at all!", "the request body is not base64"),
        (b"MIIB*QYJ", "the request body is not base64"),
        (b"abcde", "the request body is not base64"),
        (base64.b64encode(b"hello, world"), "the CSR is not a PKCS#10 request"),
        (b"\x30\x82\x01\x00garbage", "the CSR is not a PKCS#10 request"),
        (_tampered_csr(), "the CSR signature does not verify"),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "the PEM armour is not a CERTIFICATE REQUEST",
        ),
    ],
    ids=[
        "empty",
        "only-whitespace",
        "not-base64",
        "bad-character",
        "bad-length",
        "base64-of-garbage",
        "der-garbage",
        "tampered-signature",
        "pem-certificate",
    ],
)
def test_bad_bodies_are_400_with_one_line_reason(
    body: bytes, expected_reason: str
) -> None:
    """A body that is not a well-signed CSR is a 400 whose reason fits on one line."""
    with pytest.raises(BadRequest) as caught:
        decode_pkcs10_body(body, "application/pkcs10")
    assert (400, expected_reason) == (caught.value.status, caught.value.reason)


@pytest.mark.parametrize("outform", ["PEM", "DER"], ids=["pem", "der-as-base64"])
def test_openssl_req_csr_decodes(outform: str) -> None:
    """A CSR made by `openssl req` decodes, as PEM or as base64 DER."""
    csr = _openssl(
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "/dev/null",
        "-subj",
        "/CN=slot1:dev-42",
        "-outform",
        outform,
    )
    body = csr if outform == "PEM" else base64.encodebytes(csr)
    actual = decode_pkcs10_body(body, "application/pkcs10")
    assert [x509.NameAttribute(NameOID.COMMON_NAME, "slot1:dev-42")] == list(
        actual.subject
    )


def test_header_constants_are_exact() -> None:
    """The certs-only media type is spelled as deployed clients compare it."""
    assert "application/pkcs7-mime; smime-type=certs-only" == CERTS_ONLY


@pytest.mark.parametrize(
    "certs",
    [[_leaf()], [_leaf(), _root()]],
    ids=["one", "leaf-and-root"],
)
def test_certs_only_layout_and_round_trip(certs: list[x509.Certificate]) -> None:
    """Certs-only is base64 in 64-column LF lines with a final newline, and decodes back."""
    body = encode_certs_only(certs)
    der = base64.b64decode(body)
    expected_layout = _wrap(base64.b64encode(der).decode(), 64, "\n")
    # DER sorts a SET OF (X.690 §11.6), so certificate order is not preserved.
    expected_certs = sorted(cert.public_bytes(DER) for cert in certs)
    actual_certs = sorted(cert.public_bytes(DER) for cert in decode_certs_only(body))
    assert (expected_layout, expected_certs) == (body, actual_certs)


def test_certs_only_line_widths() -> None:
    """Every line but the last has exactly 64 characters and the body ends in one newline."""
    body = encode_certs_only([_leaf(), _root()]).decode()
    lines = body.split("\n")
    assert ("", True, True) == (
        lines[-1],
        all(len(line) == 64 for line in lines[:-2]),
        0 < len(lines[-2]) <= 64,
    )


def test_certs_only_parses_with_openssl() -> None:
    """`openssl pkcs7 -print_certs` reads the certs-only DER and finds both subjects."""
    der = base64.b64decode(encode_certs_only([_leaf(), _root()]))
    printed = _openssl("pkcs7", "-inform", "DER", "-print_certs", stdin=der).decode()
    subjects = sorted(
        line for line in printed.splitlines() if line.startswith("subject")
    )
    assert ["subject=CN = dev-0001", "subject=CN = root-ca"] == subjects


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "pkcs7"),
        ("", "pkcs7"),
        ("*/*", "pkcs7"),
        ("application/pkcs7-mime", "pkcs7"),
        ("application/x-pem-file", "pem"),
        ("APPLICATION/X-PEM-FILE", "pem"),
        ("application/x-pem-file, */*", "pem"),
        ("application/pkcs7-mime, application/x-pem-file", "pkcs7"),
        ("application/x-pem-file;q=0.5, application/pkcs7-mime", "pkcs7"),
        ("application/x-pem-file, application/pkcs7-mime;q=0.2", "pem"),
        ("application/x-pem-file;q=0", "pkcs7"),
        ("application/x-pem-file;q=bogus", "pkcs7"),
        ("application/x-pem-file;q=inf", "pkcs7"),
        ("application/*;q=0.1, application/x-pem-file", "pem"),
        ("text/html", "pkcs7"),
    ],
    ids=[
        "absent",
        "empty",
        "anything",
        "pkcs7",
        "pem",
        "pem-upper-case",
        "pem-over-wildcard",
        "tie-goes-to-pkcs7",
        "pkcs7-higher-q",
        "pem-higher-q",
        "pem-refused",
        "malformed-q",
        "out-of-range-q",
        "pem-over-type-wildcard",
        "neither-ignored",
    ],
)
def test_negotiate(accept: str | None, expected: str) -> None:
    """PEM is chosen only when the client ranks it above PKCS#7."""
    assert expected == negotiate(accept)


def test_pem_chain_round_trip() -> None:
    """The PEM rendering is the certificates' PEM, concatenated in order."""
    body = encode_pem_chain([_leaf(), _root()])
    assert [_leaf(), _root()] == x509.load_pem_x509_certificates(body)


def test_serverkeygen_round_trip() -> None:
    """The multipart response carries a PKCS#8 key that matches its certificate."""
    content_type, body = encode_serverkeygen(_key("device"), _leaf())
    parsed = decode_serverkeygen(content_type, body)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    expected = _leaf().public_key().public_bytes(DER, spki)
    assert (expected, [_leaf()]) == (
        parsed.private_key.public_key().public_bytes(DER, spki),
        parsed.certificates,
    )


def test_serverkeygen_framing_is_exact() -> None:
    """Boundary, part headers and CRLF line endings follow RFC 7030 §4.4.2 / RFC 2046."""
    content_type, body = encode_serverkeygen(_key("device"), _leaf(), boundary="b1")
    lines = body.split(b"\r\n")
    key_der = _key("device").private_bytes(
        DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_lines = textwrap.wrap(base64.b64encode(key_der).decode(), 64)
    expected_head = [
        b"--b1",
        b"Content-Type: application/pkcs8",
        b"Content-Transfer-Encoding: base64",
        b"",
        *(line.encode() for line in key_lines),
        b"--b1",
        b"Content-Type: application/pkcs7-mime; smime-type=certs-only",
        b"Content-Transfer-Encoding: base64",
        b"",
    ]
    assert (
        "multipart/mixed; boundary=b1",
        expected_head,
        [b"--b1--", b""],
        False,
    ) == (
        content_type,
        lines[: len(expected_head)],
        lines[-2:],
        b"\n" in body.replace(b"\r\n", b""),
    )


def test_serverkeygen_parses_with_stdlib_email() -> None:
    """Python's own MIME parser sees two parts with the EST content types."""
    content_type, body = encode_serverkeygen(_key("device"), _leaf())
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body,
        policy=email.policy.default,
    )
    assert isinstance(message, EmailMessage)
    actual = [part.get_content_type() for part in message.iter_parts()]
    assert ["application/pkcs8", "application/pkcs7-mime"] == actual


@pytest.mark.parametrize(
    ("kwargs", "expected_message"),
    [
        ({"boundary": "has space"}, "boundary 'has space' is not 1..70 MIME token"),
        ({"boundary": "x" * 71}, "is not 1..70 MIME token characters"),
        ({"certificate": "root"}, "the private key does not match the certificate"),
    ],
    ids=["space-in-boundary", "boundary-too-long", "key-mismatch"],
)
def test_serverkeygen_refuses_bad_arguments(
    kwargs: dict[str, str], expected_message: str
) -> None:
    """A bad boundary or a key that does not match the certificate is a programming error."""
    certificate = _root() if kwargs.pop("certificate", None) else _leaf()
    with pytest.raises(ValueError, match=expected_message):
        encode_serverkeygen(_key("device"), certificate, **kwargs)


CHALLENGE_PASSWORD = x509.ObjectIdentifier("1.2.840.113549.1.9.7")
EC_PUBLIC_KEY = x509.ObjectIdentifier("1.2.840.10045.2.1")
SECP384R1 = x509.ObjectIdentifier("1.3.132.0.34")
SHA384 = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.2")


@pytest.mark.parametrize(
    ("oids", "expected_hex"),
    [
        ([CHALLENGE_PASSWORD], "300b 0609 2a864886f70d010907"),
        # X.690 §8.19.5 example: 2.999.3 packs the first two arcs into 0x8837.
        ([x509.ObjectIdentifier("2.999.3")], "3005 0603 883703"),
        (
            [EC_PUBLIC_KEY, SECP384R1, SHA384],
            "301b 0607 2a8648ce3d0201 0605 2b81040022 0609 608648016503040202",
        ),
        # 12 x 11 octets = 132 > 127, so the SEQUENCE takes the long length form.
        ([CHALLENGE_PASSWORD] * 12, "308184" + "06092a864886f70d010907" * 12),
    ],
    ids=[
        "challenge-password",
        "first-arcs-over-127",
        "rfc7030-example-oids",
        "long-length",
    ],
)
def test_csrattrs_der(oids: list[x509.ObjectIdentifier], expected_hex: str) -> None:
    """The csrattrs body is base64 of a hand-computable SEQUENCE OF OBJECT IDENTIFIER."""
    body = encode_csrattrs(oids)
    assert body is not None
    assert bytes.fromhex(expected_hex) == base64.b64decode(body)


def test_csrattrs_empty_is_none() -> None:
    """Nothing to ask means no body, so the gateway answers 204."""
    assert None is encode_csrattrs([])


def test_csrattrs_parses_with_openssl() -> None:
    """`openssl asn1parse` reads the csrattrs DER as a SEQUENCE of the named OIDs."""
    body = encode_csrattrs([CHALLENGE_PASSWORD, EC_PUBLIC_KEY, SECP384R1, SHA384])
    assert body is not None
    printed = _openssl("asn1parse", "-inform", "DER", stdin=base64.b64decode(body))
    actual = [line.rsplit(":", 1)[-1].strip() for line in printed.decode().splitlines()]
    assert [
        "SEQUENCE",
        "challengePassword",
        "id-ecPublicKey",
        "secp384r1",
        "sha384",
    ] == actual


@pytest.mark.parametrize(
    ("path", "default_label", "expected"),
    [
        (
            "/.well-known/est/factory-1/simpleenroll",
            None,
            ("factory-1", Operation.SIMPLEENROLL),
        ),
        ("/.well-known/est/cacerts", "main", ("main", Operation.CACERTS)),
        (
            "/.well-known/est/a.b_c/simplereenroll",
            "x",
            ("a.b_c", Operation.SIMPLEREENROLL),
        ),
        ("/.well-known/est/csrattrs", "x", ("x", Operation.CSRATTRS)),
        ("/.well-known/est/L/serverkeygen", None, ("L", Operation.SERVERKEYGEN)),
        ("/.well-known/est/cacerts/cacerts", None, ("cacerts", Operation.CACERTS)),
    ],
    ids=[
        "label",
        "default-label",
        "dotted-label",
        "csrattrs",
        "serverkeygen",
        "op-named-label",
    ],
)
def test_parse_est_path(
    path: str, default_label: str | None, expected: tuple[str, Operation]
) -> None:
    """A label and an operation come out of every EST path shape."""
    assert expected == parse_est_path(path, default_label)


@pytest.mark.parametrize(
    ("path", "default_label", "expected_reason"),
    [
        (
            "/.well-known/est/cacerts",
            None,
            "no default label: use /.well-known/est/<label>/cacerts",
        ),
        ("/.well-known/est/x/fullcmc", None, "unknown EST operation 'fullcmc'"),
        ("/.well-known/est/x/CACERTS", None, "unknown EST operation 'CACERTS'"),
        ("/.well-known/est/-x/cacerts", None, "no such label '-x'"),
        (
            "/.well-known/est/" + "a" * 65 + "/cacerts",
            None,
            "no such label '" + "a" * 64 + "'",
        ),
        (
            "/.well-known/est/a/b/cacerts",
            "x",
            "'/.well-known/est/a/b/cacerts' is not an EST path",
        ),
        (
            "/.well-known/est/x/cacerts/",
            None,
            "'/.well-known/est/x/cacerts/' is not an EST path",
        ),
        ("/est/cacerts", "x", "'/est/cacerts' is not under /.well-known/est/"),
    ],
    ids=[
        "no-default-label",
        "unknown-op",
        "op-is-case-sensitive",
        "label-starts-with-dash",
        "label-too-long",
        "too-deep",
        "trailing-slash",
        "wrong-prefix",
    ],
)
def test_parse_est_path_not_found(
    path: str, default_label: str | None, expected_reason: str
) -> None:
    """Unknown labels, operations and shapes are 404 with a one-line reason."""
    with pytest.raises(NotFound) as caught:
        parse_est_path(path, default_label)
    assert (404, expected_reason) == (caught.value.status, caught.value.reason)


def _url_pem(*certs: x509.Certificate) -> str:
    return quote(b"".join(cert.public_bytes(PEM) for cert in certs).decode(), safe="")


def _xfcc_cases() -> dict[str, tuple[str, list[x509.Certificate]]]:
    leaf, root = _leaf(), _root()
    other = _certificate("proxy-client", "proxy", issuer="root-ca")
    subject = '"CN=dev-0001,O=Acme;Plant \\"2\\""'
    return {
        "cert": (f'Hash=ab12;Cert="{_url_pem(leaf)}";Subject={subject}', [leaf]),
        "chain-only": (f'Chain="{_url_pem(leaf, root)}"', [leaf, root]),
        "cert-and-chain": (
            f'By=spiffe://gw;Hash=ab;Cert="{_url_pem(leaf)}";Chain="{_url_pem(leaf, root)}"',
            [leaf, root],
        ),
        "unquoted-cert": (f"Hash=ab;Cert={_url_pem(leaf)}", [leaf]),
        "two-elements-uses-last": (
            ",".join(
                [
                    f'Hash=aa;Cert="{_url_pem(other)}";Subject={subject}',
                    f'Hash=bb;Cert="{_url_pem(leaf)}"',
                ]
            ),
            [leaf],
        ),
        "no-cert": ('By=spiffe://gw;Hash=ab12;Subject="CN=x"', []),
        "empty": ("  ", []),
        "nginx-escaped": (_url_pem(leaf), [leaf]),
        "nginx-legacy-tabs": (
            leaf.public_bytes(PEM).decode().replace("\n", "\n\t").strip(),
            [leaf],
        ),
    }


@pytest.mark.parametrize("case_id", list(_xfcc_cases()), ids=list(_xfcc_cases()))
def test_client_cert_from_header(case_id: str) -> None:
    """Envoy XFCC and nginx headers yield the client certificate, leaf first."""
    header, expected = _xfcc_cases()[case_id]
    assert expected == client_cert_from_header(header)


@pytest.mark.parametrize(
    ("header", "expected_reason"),
    [
        (
            'Cert="not%20a%20pem"',
            "the client-certificate header does not hold PEM certificates",
        ),
        (
            'Hash=ab;Cert="%2D%2D%2D',
            "the client-certificate header has an unterminated quote",
        ),
        (
            "-----BEGIN CERTIFICATE-----%0AAAAA",
            "the client-certificate header does not hold PEM certificates",
        ),
    ],
    ids=["cert-not-pem", "unterminated-quote", "nginx-truncated"],
)
def test_client_cert_from_header_rejects(header: str, expected_reason: str) -> None:
    """A header that cannot be read is a 400, never a crash."""
    with pytest.raises(BadRequest) as caught:
        client_cert_from_header(header)
    assert (400, expected_reason) == (caught.value.status, caught.value.reason)


@pytest.mark.parametrize(
    ("error", "expected_status"),
    [
        (BadRequest("bad"), 400),
        (Unauthorized("who?", 'Basic realm="est"'), 401),
        (Forbidden("no"), 403),
        (NotFound("gone"), 404),
        (PayloadTooLarge("big"), 413),
        (UnsupportedMediaType("type"), 415),
        (Unavailable("down", retry_after=5), 503),
    ],
    ids=["400", "401", "403", "404", "413", "415", "503"],
)
def test_error_statuses(error: EstError, expected_status: int) -> None:
    """Each error class carries its HTTP status."""
    assert expected_status == error.status


def test_error_reason_is_one_line() -> None:
    """Newlines and runs of spaces in a reason collapse to single spaces."""
    error = EstError(400, "first line\r\nsecond\tline  ")
    assert ("first line second line", "first line second line") == (
        error.reason,
        str(error),
    )


def test_error_extras() -> None:
    """401 keeps its challenge and 503 its Retry-After seconds."""
    unauthorized = Unauthorized("no client certificate", 'Basic realm="est"')
    unavailable = Unavailable("broker down", retry_after=10)
    assert ('Basic realm="est"', 10) == (
        unauthorized.www_authenticate,
        unavailable.retry_after,
    )
