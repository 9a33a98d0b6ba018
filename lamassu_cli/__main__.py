"""The ``lamassu`` command: admin commands and queries over the bus, event tail, ``up``.

Human output by default, ``--json`` for scripts. Exit status: 0 success, 1 the PKI
refused (the reply's code and reason are printed), 2 usage, 3 the PKI is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts.asyncapi import asyncapi_document
from contracts.ca import (
    INTERNAL_CA,
    CAs,
    CAView,
    Certificates,
    CertificateStatus,
    CertificateView,
    CreateCA,
    GetCA,
    GetCertificate,
    ListCAs,
    ListCertificates,
    RevocationReason,
    RevokeCA,
    RevokeCertificate,
    SignCertificate,
    UpdateCA,
)
from contracts.envelope import CloudEvent
from contracts.keys import KeyType
from contracts.names import Topology
from lamassu_cli import (
    alerts,
    cloud,
    completion,
    dlq,
    engine,
    enrollment,
    profiles,
    render,
    status,
    sweep,
    validation,
)
from lamassu_cli.bus_setup import register as register_bus
from lamassu_cli.bus_setup import run_bus_setup
from lamassu_cli.client import Client, CliError, CliSettings
from lamassu_cli.commands import (
    REASONS_HELP,
    add_command,
    add_paging,
    choices,
    confirmed,
    days,
    destructive,
    enum_type,
    listing,
    output,
    reason,
    seconds,
    warning_days,
)
from lamassu_cli.db_setup import register as register_db
from lamassu_cli.db_setup import run_db_setup
from lamassu_cli.messages import explain, explain_setting
from lamassu_cli.parser import Parser, UsageError, fail
from lamassu_cli.up import configured_services, up
from runtime.bus import BusUnavailable, RequestTimeout
from runtime.log import configure_logging

__all__ = ["main"]

# --- handlers of the subcommands: each takes the parsed args and a connected client ---


async def ca_create(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(
        CreateCA(
            name=args.name,
            parent=args.parent,
            key_type=args.key_type,
            validity_days=args.validity,
            engine=args.engine,
            about_to_expire_days=args.about_to_expire,
            profile=args.profile,
            path_length=args.path_length,
        )
    )
    output(args, result, lambda r: render.ca_detail(CAView.model_validate(r)))


async def ca_list(args: argparse.Namespace, client: Client) -> None:
    result = {**await client.call(ListCAs()), "next": None}  # every CA, never cut
    output(args, result, lambda r: render.cas_table(CAs.model_validate(r).items))


async def ca_show(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(GetCA(name=args.name))
    if args.pem:
        print(result["certificate_pem"], end="")
        return
    output(args, result, lambda r: render.ca_detail(CAView.model_validate(r)))


async def ca_update(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(
        UpdateCA(
            name=args.name, about_to_expire_days=args.about_to_expire, force=args.force
        )
    )
    output(args, result, lambda r: render.ca_detail(CAView.model_validate(r)))


async def ca_revoke(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(
        RevokeCA(name=args.name, reason=args.reason, force=args.force)
    )
    output(args, result, lambda r: render.ca_detail(CAView.model_validate(r)))


async def cert_sign(args: argparse.Namespace, client: Client) -> None:
    try:
        csr = Path(args.csr).read_text("utf-8")  # noqa: ASYNC240 - one small file, before any I/O
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read CSR file {args.csr}: {exc}", exit_code=2) from None
    result = await client.call(
        SignCertificate(
            ca=args.ca,
            csr_pem=csr,
            validity_days=args.validity,
            profile=args.profile,
            cap_validity=args.cap_validity,
        )
    )
    output(args, result, lambda r: r["certificate_pem"].rstrip("\n"))


async def cert_show(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(
        GetCertificate(serial=args.serial.lower().replace(":", ""))
    )
    if args.pem:
        print(result["certificate_pem"], end="")
        return
    output(
        args,
        result,
        lambda r: render.certificate_detail(CertificateView.model_validate(r)),
    )


async def cert_list(args: argparse.Namespace, client: Client) -> None:
    async def page(limit: int, after: str | None) -> list[dict[str, Any]]:
        request = ListCertificates(
            ca=args.ca, status=args.status, limit=limit, after=after
        )
        items: list[dict[str, Any]] = (await client.call(request))["items"]
        return items

    result = await listing(args, page, "serial")
    output(
        args,
        result,
        lambda r: render.certificates_table(Certificates.model_validate(r).items),
    )


async def cert_revoke(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(
        RevokeCertificate(
            serial=args.serial.lower().replace(":", ""), reason=args.reason
        )
    )
    output(
        args,
        result,
        lambda r: render.certificate_detail(CertificateView.model_validate(r)),
    )


async def events_tail(args: argparse.Namespace, client: Client) -> None:
    """Print events as they arrive; ``--count`` stops after that many."""
    seen = 0
    done = asyncio.Event()

    async def on_event(message: Any) -> None:
        nonlocal seen
        async with message.process(requeue=False):
            try:
                event = CloudEvent.model_validate_json(message.body)
            except ValueError:
                print(f"(undecodable message {message.message_id})", flush=True)
                return
            line = event.model_dump_json() if args.json else render.event_line(event)
            print(line, flush=True)
            seen += 1
            if args.count and seen >= args.count:
                done.set()

    await client.bus.subscribe(args.type, on_event)
    if not args.json:
        print(
            f"# following {args.type!r} on {client.bus.topology.events}",
            file=sys.stderr,
            flush=True,
        )
    await done.wait()


async def wait_ready(args: argparse.Namespace, client: Client) -> None:
    """Return once the CA worker answers, retrying until ``--timeout``."""
    try:
        async with asyncio.timeout(args.timeout):
            while True:
                try:
                    await client.bus.request(client.message(ListCAs()), timeout=5.0)
                except (BusUnavailable, RequestTimeout):
                    await asyncio.sleep(0.5)
                else:
                    print("ready", file=sys.stderr)
                    return
    except TimeoutError:
        raise CliError(
            f"unavailable: the CA worker did not answer within {args.timeout:g} s "
            "(is it running, with the same AMQP_URL and AMQP_PREFIX?)",
            exit_code=3,
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lamassu", description="Operate the Lamassu PKI.")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    _add_ca(groups)
    _add_cert(groups)
    _add_others(groups)
    return parser


def _add_ca(groups: Any) -> None:
    ca = groups.add_parser("ca", help="certificate authorities").add_subparsers(
        dest="action", required=True
    )
    p = add_command(ca, "create", ca_create, "create a root or subordinate CA")
    p.add_argument("--name", required=True)
    p.add_argument("--parent", help="issue from this CA (a subordinate CA)")
    p.add_argument(
        "--key-type",
        type=enum_type(KeyType, "key type"),
        default=KeyType.EC_P256,
        help=f"one of: {choices(KeyType)} (default ec-p256)",
    )
    p.add_argument(
        "--validity", type=days, default=3650, help="e.g. 3650d, 520w, 10y (default)"
    )
    p.add_argument(
        "--engine",
        help="engine that keeps the key: one of the CA worker's ENGINE/ENGINES "
        "(default ENGINE)",
    )
    p.add_argument(
        "--about-to-expire",
        type=warning_days,
        default=30,
        help="its certificates turn ABOUT_TO_EXPIRE this long before expiry "
        "(default 30d; 0d: no warning)",
    )
    p.add_argument("--profile", help="issuance profile of its leaves (default client)")
    p.add_argument(
        "--path-length",
        type=int,
        choices=range(11),
        metavar="N",
        help="CAs allowed below it (RFC 5280 pathLenConstraint; default: no limit)",
    )
    p = add_command(ca, "update", ca_update, "change a CA's about-to-expire threshold")
    p.add_argument("name")
    p.add_argument(
        "--about-to-expire", type=warning_days, required=True, help="e.g. 45d"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help=f"needed to turn off {INTERNAL_CA}'s warning (0d)",
    )
    add_command(ca, "list", ca_list, "list CAs")
    p = add_command(ca, "show", ca_show, "show a CA")
    p.add_argument("name")
    p.add_argument("--pem", action="store_true", help="print only its certificate, PEM")
    p = add_command(ca, "revoke", ca_revoke, "revoke a CA and everything it issued")
    p.add_argument("name")
    p.add_argument(
        "--reason",
        type=reason,
        default=RevocationReason.UNSPECIFIED,
        help=REASONS_HELP,
    )
    destructive(
        p,
        lambda a: f"Revoke CA {a.name} and every certificate it and its CAs issued?",
        force=f"needed for {INTERNAL_CA}: revoking it revokes every DMS",
    )


def _add_cert(groups: Any) -> None:
    cert = groups.add_parser("cert", help="certificates").add_subparsers(
        dest="action", required=True
    )
    p = add_command(
        cert, "sign", cert_sign, "sign a PKCS#10 CSR; prints the certificate PEM"
    )
    p.add_argument("--ca", required=True)
    p.add_argument("--csr", required=True, help="PEM or DER file")
    p.add_argument("--validity", type=days, default=365, help="e.g. 365d, 52w, 1y")
    p.add_argument("--profile", help="issuance profile (default: the CA's)")
    p.add_argument(
        "--cap-validity",
        action="store_true",
        help="cut a validity beyond the profile's or the CA's instead of refusing",
    )
    p = add_command(cert, "show", cert_show, "show a certificate")
    p.add_argument("serial")
    p.add_argument("--pem", action="store_true")
    p = add_command(cert, "list", cert_list, "list certificates")
    p.add_argument("--ca")
    p.add_argument(
        "--status",
        type=enum_type(CertificateStatus, "certificate status"),
        help=f"one of: {choices(CertificateStatus)} (any case)",
    )
    add_paging(p)
    p = add_command(cert, "revoke", cert_revoke, "revoke a certificate")
    p.add_argument("serial")
    p.add_argument(
        "--reason",
        type=reason,
        default=RevocationReason.UNSPECIFIED,
        help=REASONS_HELP,
    )
    destructive(p, lambda a: f"Revoke certificate {a.serial}?")


def _add_others(groups: Any) -> None:
    events = groups.add_parser("events", help="event stream").add_subparsers(
        dest="action", required=True
    )
    p = add_command(events, "tail", events_tail, "print events as they arrive")
    p.add_argument("--type", default="#", help="topic pattern, e.g. 'certificate.#'")
    p.add_argument("--count", type=int, default=0, help="exit after this many events")

    p = add_command(groups, "wait", wait_ready, "wait until the workers answer")
    p.add_argument(
        "--timeout",
        type=seconds,
        default=60.0,
        help="e.g. 90s, 5m, or seconds (default 60)",
    )
    enrollment.register(groups)
    profiles.register(groups)
    sweep.register(groups)
    engine.register(groups)
    cloud.register(groups)
    alerts.register(groups)
    validation.register(groups)
    register_bus(groups)
    register_db(groups)
    add_command(groups, "up", None, "run every service in one process tree")
    contracts = groups.add_parser("contracts", help="message contracts").add_subparsers(
        dest="action", required=True
    )
    add_command(contracts, "asyncapi", None, "print the AsyncAPI document")
    dlq.register(groups)
    status.register(groups)
    completion.register(groups)


def _version() -> str:
    try:
        return version("lamassu-pki")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


async def _run(args: argparse.Namespace, settings: CliSettings) -> int:
    if (refusal := confirmed(args)) is not None:  # before anything is sent
        raise CliError(refusal, exit_code=2)
    client = await Client.connect(settings)
    try:
        await args.func(args, client)
    finally:
        await client.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    """Run one command; a closed stdout (``lamassu ... | head``) ends it quietly."""
    arguments = sys.argv[1:] if argv is None else argv
    as_json = "--json" in arguments
    try:
        sys.exit(_main(arguments, as_json=as_json))
    except BrokenPipeError:
        # The reader went away: nothing more to say, and nowhere to say it. Point
        # stdout at /dev/null so that the interpreter's final flush fails no more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


def _main(arguments: list[str], *, as_json: bool) -> int:
    try:
        args = build_parser().parse_args(arguments)
    except UsageError as exc:
        if not as_json:
            sys.stderr.write(exc.usage)
        return fail(as_json, "usage", str(exc), 2, human=str(exc))
    offline = _offline(args)
    if offline is not None:
        return offline
    try:
        settings = CliSettings()
    except ValidationError as exc:
        return fail(as_json, "invalid", explain_setting(exc), 1)
    configure_logging(settings.log_level, settings.log_format)
    if args.group == "up":
        return asyncio.run(up(configured_services(os.environ)))
    return _online(args, settings, as_json=as_json)


def _online(args: argparse.Namespace, settings: CliSettings, *, as_json: bool) -> int:
    """Run a command that talks to the PKI; failures reported, as exit statuses."""
    # The CLI reports connection failures itself, in one line; the client libraries'
    # own retry chatter would only repeat it.
    for library in ("aiormq", "aio_pika"):
        logging.getLogger(library).setLevel(logging.CRITICAL)
    try:
        return asyncio.run((dlq.run if args.group == "dlq" else _run)(args, settings))
    except CliError as exc:
        if exc.reported and as_json:  # its JSON answer is out already
            return exc.exit_code
        return fail(as_json, exc.code, exc.detail, exc.exit_code, human=str(exc))
    except ValidationError as exc:  # an argument the contract refuses, caught here
        return fail(as_json, "invalid", explain(exc), 2)
    except (BusUnavailable, RequestTimeout) as exc:
        return fail(as_json, "unavailable", str(exc) or "the broker went away", 3)
    except KeyboardInterrupt:
        return 130


def _offline(args: argparse.Namespace) -> int | None:
    """Run a command that needs neither settings nor the bus; None for the others."""
    if args.group == "contracts":
        print(json.dumps(asyncapi_document(Topology()), indent=2))
        return 0
    if args.group == "completion":
        return completion.run(args, build_parser())
    if args.group == "engine" and args.local:
        return engine.run_check(args)
    # Groups that do not use the bus: they report and exit themselves.
    offline = {
        "ocsp": validation.run_ocsp_status,
        "bus": run_bus_setup,
        "db": run_db_setup,
    }
    if args.group in offline:
        return offline[args.group](args)
    return None


if __name__ == "__main__":
    main()
