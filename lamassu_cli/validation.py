"""``lamassu crl`` and ``lamassu ocsp``: the CRLs the VA serves, a new CRL on demand,
and a certificate's status asked of its OCSP responder as a relying party would.

``ocsp status`` speaks HTTP to the responder only (no bus): it checks the answer's
signature, its responder's authorization by the issuer (RFC 6960 §4.2.2.2) and the
nonce it sent (RFC 8954) before printing anything.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from contracts.va import CRLView, GetCRL, SignCRL
from lamassu_cli.client import Client, CliError
from lamassu_cli.commands import add_command, output

__all__ = ["register", "run_ocsp_status"]

_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


async def crl_show(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(GetCRL(ca=args.ca, delta=args.delta))
    view = CRLView.model_validate(result)
    if args.pem:
        der = base64.b64decode(view.crl_der_b64)
        crl = x509.load_der_x509_crl(der)
        print(crl.public_bytes(serialization.Encoding.PEM).decode(), end="")
        return
    output(args, result, lambda _: _describe(view))


async def crl_publish(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(SignCRL(ca=args.ca))
    view = CRLView.model_validate(result)
    output(
        args, result, lambda _: "signed; the VA serves it shortly\n" + _describe(view)
    )


def _describe(view: CRLView) -> str:
    kind = "full" if view.delta_base is None else f"delta of #{view.delta_base}"
    return "\n".join(
        [
            f"CA:          {view.ca}",
            f"CRL:         #{view.number} ({kind})",
            f"this update: {view.this_update.isoformat()}",
            f"next update: {view.next_update.isoformat()}",
            f"entries:     {view.entries}",
        ]
    )


# --- ocsp status -----------------------------------------------------------------------


def _read_certificate(path: str) -> x509.Certificate:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", exit_code=2) from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise CliError(
            f"{path} is not a certificate (PEM or DER)", exit_code=2
        ) from None


def _access(certificate: x509.Certificate, method: x509.ObjectIdentifier) -> str | None:
    try:
        aia = certificate.extensions.get_extension_for_class(
            x509.AuthorityInformationAccess
        ).value
    except x509.ExtensionNotFound:
        return None
    for description in aia:
        if description.access_method == method and isinstance(
            description.access_location, x509.UniformResourceIdentifier
        ):
            return description.access_location.value
    return None


async def _fetch(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> bytes:
    try:
        async with session.request(kwargs.pop("method", "GET"), url, **kwargs) as r:
            if r.status != 200:
                raise CliError(f"{url} answered HTTP {r.status}")
            return await r.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CliError(
            f"unavailable: {url}: {exc or 'timed out'}", exit_code=3
        ) from None


def _check_signature(response: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    key = signer.public_key()
    algorithm = response.signature_hash_algorithm or hashes.SHA256()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(
                response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm)
            )
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(
                response.signature,
                response.tbs_response_bytes,
                padding.PKCS1v15(),
                algorithm,
            )
        else:
            raise CliError("the responder's key type is not supported")
    except InvalidSignature:
        raise CliError("the OCSP response's signature does not verify") from None


def _authorized_signer(
    response: ocsp.OCSPResponse, issuer: x509.Certificate
) -> x509.Certificate:
    """The issuer itself, or a responder it certified for OCSP signing (RFC 6960
    §4.2.2.2); anything else is refused."""
    for candidate in [issuer, *response.certificates]:
        if candidate is not issuer:
            try:
                candidate.verify_directly_issued_by(issuer)
                eku = candidate.extensions.get_extension_for_class(
                    x509.ExtendedKeyUsage
                ).value
            except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
                continue
            if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
                continue
        try:
            _check_signature(response, candidate)
        except CliError:
            continue
        return candidate
    raise CliError("the OCSP response is not signed by the issuer or its responder")


async def _ocsp_status(args: argparse.Namespace) -> dict[str, Any]:
    certificate = _read_certificate(args.cert)
    url = args.url or _access(certificate, AuthorityInformationAccessOID.OCSP)
    if not url:
        raise CliError("the certificate names no OCSP responder; pass --url", 2)
    async with aiohttp.ClientSession(timeout=_HTTP_TIMEOUT) as session:
        if args.issuer:
            issuer = _read_certificate(args.issuer)
        else:
            where = _access(certificate, AuthorityInformationAccessOID.CA_ISSUERS)
            if not where:
                raise CliError("the certificate names no issuer URL; pass --issuer", 2)
            issuer = x509.load_der_x509_certificate(await _fetch(session, where))
        nonce = os.urandom(16)
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(certificate, issuer, hashes.SHA1())  # noqa: S303 - RFC 5019 §2.1.1
            .add_extension(x509.OCSPNonce(nonce), critical=False)
            .build()
        )
        der = await _fetch(
            session,
            url,
            method="POST",
            data=request.public_bytes(serialization.Encoding.DER),
            headers={"Content-Type": "application/ocsp-request"},
        )
    return _read_answer(der, certificate, issuer, nonce, url)


def _read_answer(
    der: bytes,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    nonce: bytes,
    url: str,
) -> dict[str, Any]:
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError:
        raise CliError(f"{url} did not answer with an OCSP response") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise CliError(f"the responder refused: {response.response_status.name}")
    signer = _authorized_signer(response, issuer)
    if response.serial_number != certificate.serial_number:
        raise CliError("the OCSP response is about another certificate")
    echoed = [
        e.value for e in response.extensions if isinstance(e.value, x509.OCSPNonce)
    ]
    if echoed != [x509.OCSPNonce(nonce)]:
        raise CliError("the OCSP response does not echo our nonce (a replay?)")
    found: dict[str, Any] = {
        "serial": format(certificate.serial_number, "x"),
        "status": response.certificate_status.name.lower(),
        "this_update": response.this_update_utc.isoformat(),
        "next_update": None
        if response.next_update_utc is None
        else response.next_update_utc.isoformat(),
        "responder": signer.subject.rfc4514_string(),
        "url": url,
    }
    if response.certificate_status is ocsp.OCSPCertStatus.REVOKED:
        found["revoked_at"] = (
            None
            if response.revocation_time_utc is None
            else response.revocation_time_utc.isoformat()
        )
        reason = response.revocation_reason
        found["reason"] = None if reason is None else reason.value
    return found


def run_ocsp_status(args: argparse.Namespace) -> int:
    """``lamassu ocsp status``: the exit status (0 answered, 1 refused or not
    trustworthy, 2 usage, 3 unreachable)."""
    try:
        found = asyncio.run(_ocsp_status(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    line = found["status"]
    if "revoked_at" in found:
        line += f" since {found['revoked_at']}"
        if found["reason"]:
            line += f" ({found['reason']})"
    print(f"{found['serial']}: {line}")
    print(f"responder: {found['responder']} at {found['url']}")
    print(f"this update: {found['this_update']}, next update: {found['next_update']}")
    return 0


def register(groups: Any) -> None:
    """Add the ``crl`` and ``ocsp`` command groups."""
    crl = groups.add_parser("crl", help="certificate revocation lists").add_subparsers(
        dest="action", required=True
    )
    p = add_command(crl, "show", crl_show, "show the CRL the VA serves for a CA")
    p.add_argument("ca")
    p.add_argument("--delta", action="store_true", help="the delta CRL")
    p.add_argument("--pem", action="store_true", help="print only the CRL, PEM")
    p = add_command(crl, "publish", crl_publish, "sign a new full CRL (and delta) now")
    p.add_argument("ca")
    status = groups.add_parser("ocsp", help="OCSP").add_subparsers(
        dest="action", required=True
    )
    p = add_command(status, "status", None, "ask a certificate's OCSP responder")
    p.add_argument("--cert", required=True, help="the certificate, PEM or DER")
    p.add_argument(
        "--issuer", help="its issuer's certificate (default: from its AIA caIssuers)"
    )
    p.add_argument("--url", help="the responder (default: from its AIA)")
