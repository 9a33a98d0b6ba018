"""The EST wire format (RFC 7030 as updated by RFC 8951): request bodies in, response bodies out.

Pure: no I/O and no aiohttp; the gateway's handlers call these to parse and render, and
failures are ``est_gateway.errors`` carrying the HTTP status to answer with.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from contracts.pki import CSRRejected, load_csr
from est_gateway.errors import BadRequest, NotFound, UnsupportedMediaType

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = [
    "BASE64",
    "CERTS_ONLY",
    "CONTENT_TRANSFER_ENCODING",
    "CSRATTRS",
    "PEM_FILE",
    "PKCS8",
    "PKCS10",
    "Operation",
    "Rendering",
    "client_cert_from_header",
    "decode_pkcs10_body",
    "encode_certs_only",
    "encode_csrattrs",
    "encode_pem_chain",
    "encode_serverkeygen",
    "negotiate",
    "parse_est_path",
]

# Media types and header values, spelled exactly as widely deployed clients expect them
# (DESIGN §3): one space after the semicolon and no quotes around certs-only.
PKCS10 = "application/pkcs10"  # RFC 7030 §4.2.1
CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"  # RFC 7030 §4.1.3
PKCS8 = "application/pkcs8"  # RFC 7030 §4.4.2, unencrypted key part
CSRATTRS = "application/csrattrs"  # RFC 7030 §4.5.2
PEM_FILE = "application/x-pem-file"  # not EST; the original system's Accept extension
CONTENT_TRANSFER_ENCODING = "Content-Transfer-Encoding"
BASE64 = "base64"

_PKCS7_MIME = "application/pkcs7-mime"
_MULTIPART_MIXED = "multipart/mixed"
_LINE_WIDTH = 64
_CRLF = b"\r\n"
# RFC 2046 §5.1.1: a delimiter line is "--" + boundary, and "-" is outside the base64
# alphabet, so no base64 line can ever collide with it; a fixed boundary is therefore
# safe and keeps responses byte-for-byte reproducible.
_DEFAULT_BOUNDARY = "est-serverkeygen-boundary"
# Token characters only (RFC 2045 §5.1), so the boundary never needs quoting.
_BOUNDARY = re.compile(r"[0-9A-Za-z'+_.-]{1,70}")
_WHITESPACE = re.compile(rb"\s+")
_PEM_CSR = re.compile(
    rb"-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----(.*?)-----END (?:NEW )?CERTIFICATE REQUEST-----",
    re.DOTALL,
)
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_EST_PREFIX = "/.well-known/est/"
_QUOTE_LIMIT = 64

Rendering = Literal["pkcs7", "pem"]


class Operation(enum.StrEnum):
    """The EST operations served (RFC 7030 §3.2.2); fullcmc is not."""

    CACERTS = "cacerts"
    SIMPLEENROLL = "simpleenroll"
    SIMPLEREENROLL = "simplereenroll"
    CSRATTRS = "csrattrs"
    SERVERKEYGEN = "serverkeygen"


def _quote(value: str) -> str:
    """A client-supplied value, shortened, safe to put in a one-line reason."""
    return repr(value[:_QUOTE_LIMIT])


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _parameters(content_type: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in content_type.split(";")[1:]:
        name, _, value = item.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return params


def _decode_base64(text: bytes) -> bytes:
    """Strict alphabet, lenient layout; raises ``binascii.Error`` (a ValueError)."""
    # RFC 8951 §3: ignore any whitespace, CR and LF, including none at all.
    compact = _WHITESPACE.sub(b"", text)
    # RFC 4648 §3.2 lets a decoder accept dropped "=" padding; some clients drop it.
    compact += b"=" * (-len(compact) % 4)
    return base64.b64decode(compact, validate=True)


def _encode_base64(der: bytes, eol: bytes = b"\n") -> bytes:
    """Base64 in 64-column lines, each ending with ``eol`` (DESIGN §3, as PEM does)."""
    text = base64.b64encode(der)
    lines = [text[i : i + _LINE_WIDTH] for i in range(0, len(text), _LINE_WIDTH)]
    return b"".join(line + eol for line in lines)


def _csr_der(body: bytes) -> bytes:
    if not body.strip():
        raise BadRequest("the request body is empty")
    # A DER CSR always opens with a long-form length octet (>= 0x81), which base64 text
    # never holds: a non-ASCII body is unambiguously raw DER, whatever the (ignored,
    # RFC 8951 §3) Content-Transfer-Encoding said, so accept it.
    if not body.isascii():
        return body
    if b"-----BEGIN" in body:
        match = _PEM_CSR.search(body)
        if match is None:
            raise BadRequest("the PEM armour is not a CERTIFICATE REQUEST")
        body = match.group(1)
    try:
        return _decode_base64(body)
    except binascii.Error as exc:
        raise BadRequest("the request body is not base64") from exc


def decode_pkcs10_body(
    body: bytes, content_type: str | None
) -> x509.CertificateSigningRequest:
    """Parse a simpleenroll/simplereenroll/serverkeygen body (RFC 7030 §4.2.1).

    Only syntax and proof of possession are checked here; the CA worker owns the policy.
    """
    if content_type is None or _media_type(content_type) != PKCS10:
        got = "none" if content_type is None else _quote(content_type)
        raise UnsupportedMediaType(f"the Content-Type must be {PKCS10}, got {got}")
    try:
        # RFC 2986 §4.2: the self-signature proves possession of the private key.
        return load_csr(_csr_der(body))
    except CSRRejected as exc:
        raise BadRequest(str(exc)) from exc


def encode_certs_only(certs: Sequence[x509.Certificate]) -> bytes:
    """A degenerate certs-only CMS SignedData (RFC 7030 §4.1.3, RFC 5652 §5), base64."""
    der = pkcs7.serialize_certificates(list(certs), serialization.Encoding.DER)
    return _encode_base64(der)


def encode_pem_chain(certs: Sequence[x509.Certificate]) -> bytes:
    """Concatenated PEM certificates, for clients that sent ``Accept: application/x-pem-file``."""
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def _ranking(accept: str, media_type: str) -> tuple[float, int]:
    """(q, specificity) of the most specific range in ``accept`` matching ``media_type``."""
    kind = media_type.partition("/")[0]
    best_specificity, best_q = -1, 0.0
    for item in accept.split(","):
        media_range = _media_type(item)
        # RFC 9110 §12.5.1: a more specific range overrides a less specific one.
        specificity = {media_type: 2, f"{kind}/*": 1, "*/*": 0}.get(media_range, -1)
        if specificity <= best_specificity:
            continue
        try:
            q = float(_parameters(item).get("q", "1"))
        except ValueError:
            q = 0.0
        # RFC 9110 §12.4.2: a weight lies in 0..1; anything else (nan too) refuses.
        best_specificity, best_q = specificity, q if 0 <= q <= 1 else 0.0
    return best_q, best_specificity


def negotiate(accept: str | None) -> Rendering:
    """PEM only when the client prefers it; otherwise the RFC 7030 format.

    An Accept that matches neither still gets PKCS#7: RFC 9110 §12.5.1 lets a server
    disregard the header rather than answer 406, and EST clients expect certs-only.
    """
    if not accept:
        return "pkcs7"
    pem = _ranking(accept, PEM_FILE)
    pkcs7_mime = _ranking(accept, _PKCS7_MIME)
    if pem[0] > 0 and pem > pkcs7_mime:
        return "pem"
    return "pkcs7"


def encode_serverkeygen(
    private_key: PrivateKeyTypes,
    certificate: x509.Certificate,
    boundary: str | None = None,
) -> tuple[str, bytes]:
    """The serverkeygen response (RFC 7030 §4.4.2): ``(Content-Type value, body)``.

    The key part is an unencrypted PKCS#8; the certificate part is certs-only.
    """
    boundary = _DEFAULT_BOUNDARY if boundary is None else boundary
    if not _BOUNDARY.fullmatch(boundary):
        raise ValueError(f"boundary {boundary!r} is not 1..70 MIME token characters")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der_encoding = serialization.Encoding.DER
    if private_key.public_key().public_bytes(
        der_encoding, spki
    ) != certificate.public_key().public_bytes(der_encoding, spki):
        raise ValueError("the private key does not match the certificate")
    key_der = private_key.private_bytes(
        der_encoding,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_der = pkcs7.serialize_certificates([certificate], der_encoding)
    delimiter = b"--" + boundary.encode("ascii")
    body = bytearray()
    for media_type, der in ((PKCS8, key_der), (CERTS_ONLY, cert_der)):
        # RFC 2046 §5.1.1: CRLF line endings throughout; the CRLF that ends the last
        # base64 line doubles as the one that must precede the next delimiter.
        body += delimiter + _CRLF
        body += f"Content-Type: {media_type}".encode("ascii") + _CRLF
        body += f"{CONTENT_TRANSFER_ENCODING}: {BASE64}".encode("ascii") + _CRLF
        body += _CRLF
        body += _encode_base64(der, _CRLF)
    body += delimiter + b"--" + _CRLF
    return f"{_MULTIPART_MIXED}; boundary={boundary}", bytes(body)


def _der_length(length: int) -> bytes:
    # X.690 §8.1.3: short form below 128, else 0x80 | octet count, then big-endian.
    short_form_limit = 0x80
    if length < short_form_limit:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _der_tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def _base128(value: int) -> bytes:
    # X.690 §8.19.2: big-endian groups of 7 bits, bit 8 set on every octet but the
    # last, and no leading 0x80 octet (minimal).
    octets = [value & 0x7F]
    value >>= 7
    while value:
        octets.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(octets))


def _der_oid(oid: x509.ObjectIdentifier) -> bytes:
    """The OBJECT IDENTIFIER TLV; cryptography validates the arcs but exports no encoder."""
    first, second, *rest = (int(arc) for arc in oid.dotted_string.split("."))
    # X.690 §8.19.4: the first two arcs share one subidentifier, 40 * X + Y.
    content = b"".join(_base128(arc) for arc in (40 * first + second, *rest))
    return _der_tlv(0x06, content)


def encode_csrattrs(oids: Sequence[x509.ObjectIdentifier]) -> bytes | None:
    """The csrattrs body (RFC 7030 §4.5.2), or None when there is nothing to ask (204).

    ``CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID`` (RFC 8951 §4); only the ``oid``
    alternative of the CHOICE is produced, so the DER is a SEQUENCE of OID TLVs.
    """
    if not oids:
        return None
    return _encode_base64(_der_tlv(0x30, b"".join(_der_oid(oid) for oid in oids)))


def parse_est_path(path: str, default_label: str | None) -> tuple[str, Operation]:
    """(label, operation) of ``/.well-known/est/[<label>/]<op>`` (RFC 7030 §3.2.2)."""
    if not path.startswith(_EST_PREFIX):
        raise NotFound(f"{_quote(path)} is not under {_EST_PREFIX}")
    match path.removeprefix(_EST_PREFIX).split("/"):
        case [operation]:
            if default_label is None:
                raise NotFound(
                    f"no default label: use {_EST_PREFIX}<label>/{operation}"
                )
            label = default_label
        case [label, operation]:
            if not _LABEL.fullmatch(label):
                raise NotFound(f"no such label {_quote(label)}")
        case _:
            raise NotFound(f"{_quote(path)} is not an EST path")
    try:
        return label, Operation(operation)
    except ValueError:
        raise NotFound(f"unknown EST operation {_quote(operation)}") from None


def _split_unquoted(text: str, separator: str) -> list[str]:
    """Split at ``separator`` outside double quotes; a backslash escapes inside quotes."""
    pieces: list[str] = []
    current: list[str] = []
    in_quotes = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif in_quotes and char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == separator and not in_quotes:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    if in_quotes:
        raise BadRequest("the client-certificate header has an unterminated quote")
    pieces.append("".join(current))
    return pieces


def _xfcc_value(raw: str) -> str:
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    return unquote(value)


def _load_pem_certificates(pem: str) -> list[x509.Certificate]:
    # nginx's older $ssl_client_cert indents continuation lines with a tab.
    text = "\n".join(line.strip() for line in pem.splitlines())
    try:
        return x509.load_pem_x509_certificates(text.encode("ascii"))
    except ValueError as exc:  # includes UnicodeEncodeError
        raise BadRequest(
            "the client-certificate header does not hold PEM certificates"
        ) from exc


def client_cert_from_header(value: str) -> list[x509.Certificate]:
    """The client certificate (leaf first) forwarded by a TLS-terminating proxy.

    Envoy's ``x-forwarded-client-cert`` (``Cert=``/``Chain=`` of the last element, the
    one the nearest proxy appended) or nginx's ``$ssl_client_escaped_cert``. An empty
    list means the proxy forwarded no certificate. Trusting the header is the caller's job.
    """
    text = value.strip()
    if not text:
        return []
    if text.upper().startswith(("-----BEGIN", "%2D")):
        return _load_pem_certificates(unquote(text))
    last = _split_unquoted(text, ",")[-1]
    fields: dict[str, str] = {}
    for pair in _split_unquoted(last, ";"):
        key, _, raw = pair.partition("=")
        fields[key.strip().lower()] = raw
    leaf = fields.get("cert")
    chain = fields.get("chain")
    chain_certs = _load_pem_certificates(_xfcc_value(chain)) if chain else []
    if not leaf:
        return chain_certs
    leaf_cert = _load_pem_certificates(_xfcc_value(leaf))[0]
    # Envoy's Chain includes the leaf; keep it once, first.
    return [leaf_cert, *(cert for cert in chain_certs if cert != leaf_cert)]
