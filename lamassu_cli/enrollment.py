"""``lamassu dms ...`` and ``lamassu device ...``: registration authorities and devices."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from contracts.ca import RevocationReason
from contracts.devices import (
    DecommissionDevice,
    Devices,
    DeviceStatus,
    DeviceView,
    GetDevice,
    ListDevices,
    RegisterDevice,
)
from contracts.dms import (
    CreateDMS,
    DeviceOwnership,
    DMSs,
    DMSView,
    GetDMS,
    ListDMSs,
    RenewDMS,
    RevokeDMS,
    TransferDevice,
    UpdateAuthorizedCAs,
    UpdateDMSPolicy,
)
from contracts.message import Message
from contracts.pki import DEFAULT_SLOT
from lamassu_cli import render
from lamassu_cli.client import Client, CliError
from lamassu_cli.commands import (
    REASONS_HELP,
    add_command,
    add_paging,
    choices,
    destructive,
    enum_type,
    listing,
    output,
    reason,
    warning_days,
)

__all__ = ["register"]


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (house rule: key files are 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _dms_csr(args: argparse.Namespace, key_file: Path) -> tuple[str, Path | None]:
    """The DMS's CSR: from --csr, or for a P-256 key made here and written to
    ``key_file`` (0600), which never leaves this machine."""
    if args.csr:
        try:
            return Path(args.csr).read_text("utf-8"), None
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(
                f"cannot read CSR file {args.csr}: {exc}", exit_code=2
            ) from None
    if key_file.exists():
        raise CliError(f"{key_file} exists; pass --csr or another --out", exit_code=2)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, args.name)]))
        .sign(key, hashes.SHA256())
    )
    _write_private(
        key_file,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key_file


async def _issue_dms_certificate(
    args: argparse.Namespace,
    client: Client,
    request: Callable[[str], Message],
    suffix: str,
) -> None:
    """Send ``request(csr_pem)``; write the certificate (and key) to --out."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before any I/O on the bus
    csr_pem, key_file = _dms_csr(args, out / f"{args.name}{suffix}.key")
    try:
        result = await client.call(request(csr_pem))
    except Exception:
        # Refused (by the DMS worker, or by the contract before anything was sent):
        # nothing was created, so leave no orphan key behind.
        if key_file is not None:
            key_file.unlink()
        raise
    cert_file = out / f"{args.name}{suffix}.pem"
    cert_file.write_text(result["certificate_pem"])
    output(
        args,
        result,
        lambda r: (
            render.dms_detail(DMSView.model_validate(r))
            + f"\ncertificate {cert_file}"
            + (f"\nkey         {key_file} (mode 0600)" if key_file else "")
        ),
    )


async def dms_create(args: argparse.Namespace, client: Client) -> None:
    """Create a DMS; without --csr a P-256 key is made here and never leaves this machine."""
    await _issue_dms_certificate(
        args,
        client,
        lambda csr_pem: CreateDMS(
            name=args.name,
            authorized_cas=args.authorized_ca,
            csr_pem=csr_pem,
            allow_replace=args.allow_replace,
            reenroll_window_days=args.reenroll_window,
            revoke_on_reenroll=args.revoke_on_reenroll,
            profile=args.profile,
            require_pop=args.require_pop,
        ),
        "",
    )


async def dms_renew(args: argparse.Namespace, client: Client) -> None:
    """A new certificate for a DMS (new key made here unless --csr); the old one keeps
    working for --overlap."""
    await _issue_dms_certificate(
        args,
        client,
        lambda csr_pem: RenewDMS(
            name=args.name, csr_pem=csr_pem, overlap_days=args.overlap
        ),
        ".renewed",
    )


async def dms_update(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(
        UpdateDMSPolicy(
            name=args.name,
            allow_replace=args.allow_replace,
            reenroll_window_days=args.reenroll_window,
            revoke_on_reenroll=args.revoke_on_reenroll,
            profile=args.profile,
            require_pop=args.require_pop,
        )
    )
    output(args, result, lambda r: render.dms_detail(DMSView.model_validate(r)))


async def dms_allow(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(UpdateAuthorizedCAs(name=args.name, add=[args.ca]))
    output(args, result, lambda r: render.dms_detail(DMSView.model_validate(r)))


async def dms_deny(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(UpdateAuthorizedCAs(name=args.name, remove=[args.ca]))
    output(args, result, lambda r: render.dms_detail(DMSView.model_validate(r)))


async def dms_revoke(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(RevokeDMS(name=args.name, reason=args.reason))
    output(args, result, lambda r: render.dms_detail(DMSView.model_validate(r)))


async def dms_show(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(GetDMS(name=args.name))
    output(args, result, lambda r: render.dms_detail(DMSView.model_validate(r)))


async def dms_list(args: argparse.Namespace, client: Client) -> None:
    result = {**await client.call(ListDMSs()), "next": None}  # every DMS, never cut
    output(args, result, lambda r: render.dms_table(DMSs.model_validate(r).items))


async def device_list(args: argparse.Namespace, client: Client) -> None:
    async def page(limit: int, after: str | None) -> list[dict[str, Any]]:
        request = ListDevices(status=args.status, limit=limit, after=after)
        items: list[dict[str, Any]] = (await client.call(request))["items"]
        return items

    result = await listing(args, page, "id")
    output(
        args, result, lambda r: render.devices_table(Devices.model_validate(r).items)
    )


def _device(result: Any) -> str:
    return render.device_detail(DeviceView.model_validate(result))


async def device_show(args: argparse.Namespace, client: Client) -> None:
    output(args, await client.call(GetDevice(id=args.id)), _device)


async def device_register(args: argparse.Namespace, client: Client) -> None:
    request = RegisterDevice(
        id=args.id, dms=args.dms, slots=args.slot or [DEFAULT_SLOT]
    )
    output(args, await client.call(request), _device)


async def device_decommission(args: argparse.Namespace, client: Client) -> None:
    output(args, await client.call(DecommissionDevice(id=args.id)), _device)


async def device_transfer(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(TransferDevice(device_id=args.id, dms=args.to))
    output(
        args,
        result,
        lambda r: (
            f"device {r['device_id']} now belongs to DMS "
            f"{DeviceOwnership.model_validate(r).dms}"
        ),
    )


def _policy_arguments(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The policy options of ``dms create`` (with defaults) and ``dms update``
    (without: what is not given keeps its value)."""
    parser.add_argument(
        "--allow-replace",
        action=argparse.BooleanOptionalAction,
        default=False if defaults else None,
        help="simpleenroll may replace a device's live certificate (default: refused)",
    )
    parser.add_argument(
        "--reenroll-window",
        type=warning_days,
        default=0 if defaults else None,
        help="devices re-enroll only this long before expiry, e.g. 30d "
        "(default 0d: any time)",
    )
    parser.add_argument(
        "--revoke-on-reenroll",
        action=argparse.BooleanOptionalAction,
        default=True if defaults else None,
        help="a renewal revokes the certificate it supersedes (default: on)",
    )
    parser.add_argument(
        "--profile", help="issuance profile of its devices (default: each CA's)"
    )
    parser.add_argument(
        "--require-pop",
        action=argparse.BooleanOptionalAction,
        default=False if defaults else None,
        help="enrollments must carry the TLS 1.2 tls-unique as challengePassword "
        "(RFC 7030 §3.5; default: off)",
    )


def register(groups: Any) -> None:
    """Add the ``dms`` and ``device`` command groups."""
    dms = groups.add_parser(
        "dms", help="device manufacturing systems (registration authorities)"
    )
    sub = dms.add_subparsers(dest="action", required=True)
    p = add_command(
        sub, "create", dms_create, "register a DMS and issue its certificate"
    )
    p.add_argument("--name", required=True)
    p.add_argument("--authorized-ca", action="append", required=True, metavar="CA")
    p.add_argument(
        "--csr", help="the DMS's own CSR; without it a key is generated here"
    )
    p.add_argument(
        "--out", default=".", help="where the certificate (and key) are written"
    )
    _policy_arguments(p, defaults=True)
    p = add_command(sub, "update", dms_update, "change a DMS's enrollment policy")
    p.add_argument("name")
    _policy_arguments(p, defaults=False)
    p = add_command(
        sub, "renew", dms_renew, "issue a DMS a new certificate; the old one overlaps"
    )
    p.add_argument("name")
    p.add_argument(
        "--csr", help="the DMS's new CSR; without it a new key is generated here"
    )
    p.add_argument(
        "--out", default=".", help="where NAME.renewed.pem (and .key) are written"
    )
    p.add_argument(
        "--overlap",
        type=warning_days,
        default=7,
        help="how long the old certificate keeps working (default 7d)",
    )
    p = add_command(sub, "allow", dms_allow, "let a DMS enroll devices for a CA")
    p.add_argument("name")
    p.add_argument("ca")
    p = add_command(sub, "deny", dms_deny, "take a CA off a DMS's allow-list")
    p.add_argument("name")
    p.add_argument("ca")
    p = add_command(
        sub, "revoke", dms_revoke, "revoke a DMS; its enrollments are refused"
    )
    p.add_argument("name")
    p.add_argument(
        "--reason",
        type=reason,
        default=RevocationReason.UNSPECIFIED,
        help=REASONS_HELP,
    )
    destructive(p, lambda a: f"Revoke DMS {a.name}? Its devices can no longer enroll.")
    p = add_command(sub, "show", dms_show, "show a DMS")
    p.add_argument("name")
    add_command(sub, "list", dms_list, "list DMSs")

    device = groups.add_parser("device", help="devices and their status")
    sub = device.add_subparsers(dest="action", required=True)
    p = add_command(sub, "list", device_list, "list devices")
    p.add_argument(
        "--status",
        type=enum_type(DeviceStatus, "device status"),
        help=f"one of: {choices(DeviceStatus)} (any case)",
    )
    add_paging(p)
    p = add_command(sub, "show", device_show, "show a device and its slots")
    p.add_argument("id")
    p = add_command(
        sub, "register", device_register, "register a device before it enrolls"
    )
    p.add_argument("id")
    p.add_argument("--dms")
    p.add_argument("--slot", action="append", help="slot names (default: default)")
    p = add_command(
        sub,
        "decommission",
        device_decommission,
        "decommission; revokes its certificates",
    )
    p.add_argument("id")
    destructive(
        p,
        lambda a: f"Decommission device {a.id} and revoke every certificate it holds?",
    )
    p = add_command(
        sub, "transfer", device_transfer, "give a device to another DMS (admin)"
    )
    p.add_argument("id")
    p.add_argument("--to", required=True, metavar="DMS")
