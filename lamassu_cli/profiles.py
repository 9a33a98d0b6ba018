"""``lamassu profile ...``: issuance profiles (what a leaf certificate may say)."""

from __future__ import annotations

import argparse
from typing import Any

from contracts.keys import KeyType
from contracts.profiles import (
    CreateProfile,
    ExtendedKeyUsage,
    GetProfile,
    KeyUsage,
    ListProfiles,
    Profiles,
    ProfileView,
    SanKind,
)
from lamassu_cli.client import Client
from lamassu_cli.commands import add_command, days, output
from lamassu_cli.render import table

__all__ = ["register"]


def detail(profile: ProfileView) -> str:
    patterns = ", ".join(f"{k.value}={v}" for k, v in profile.san_patterns.items())
    rows = [
        ("name", profile.name + (" (built in)" if profile.built_in else "")),
        ("key usage", ", ".join(["digital_signature", *profile.key_usage])),
        ("ext usage", ", ".join(profile.extended_key_usage)),
        ("san kinds", ", ".join(profile.san_kinds) or "none"),
        ("san rules", patterns or "-"),
        ("max sans", str(profile.max_sans)),
        ("cn rule", profile.common_name_pattern or "-"),
        ("validity", f"at most {profile.max_validity_days} days"),
        ("key types", ", ".join(profile.key_types)),
    ]
    return "\n".join(f"{k:<11} {v}" for k, v in rows)


def _pattern(text: str) -> tuple[SanKind, str]:
    kind, equals, pattern = text.partition("=")
    try:
        return SanKind(kind), pattern if equals else ""
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KIND=REGEX with KIND one of "
            f"{', '.join(k.value for k in SanKind)}"
        ) from None


async def profile_create(args: argparse.Namespace, client: Client) -> None:
    fields: dict[str, Any] = {
        "name": args.name,
        "key_usage": args.key_usage or [],
        "extended_key_usage": args.ext_key_usage or [ExtendedKeyUsage.CLIENT_AUTH],
        "san_kinds": args.san or [],
        "san_patterns": dict(args.san_pattern or []),
        "max_sans": args.max_sans,
        "common_name_pattern": args.cn_pattern,
        "max_validity_days": args.max_validity,
    }
    if args.key_type:
        fields["key_types"] = args.key_type
    result = await client.call(CreateProfile.model_validate(fields))
    output(args, result, lambda r: detail(ProfileView.model_validate(r)))


async def profile_show(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(GetProfile(name=args.name))
    output(args, result, lambda r: detail(ProfileView.model_validate(r)))


async def profile_list(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(ListProfiles())
    output(
        args,
        result,
        lambda r: table(
            ["NAME", "EXT USAGE", "SAN KINDS", "MAX DAYS"],
            [
                [
                    p.name,
                    ",".join(p.extended_key_usage),
                    ",".join(p.san_kinds) or "-",
                    str(p.max_validity_days),
                ]
                for p in Profiles.model_validate(r).items
            ],
        ),
    )


def register(groups: Any) -> None:
    """Add the ``profile`` command group."""
    sub = groups.add_parser("profile", help="issuance profiles").add_subparsers(
        dest="action", required=True
    )
    p = add_command(sub, "create", profile_create, "store an issuance profile")
    p.add_argument("name")
    p.add_argument(
        "--key-usage", type=KeyUsage, action="append", choices=list(KeyUsage)
    )
    p.add_argument(
        "--ext-key-usage",
        type=ExtendedKeyUsage,
        action="append",
        choices=list(ExtendedKeyUsage),
        help="default client_auth",
    )
    p.add_argument(
        "--san",
        type=SanKind,
        action="append",
        choices=list(SanKind),
        help="allowed kind",
    )
    p.add_argument(
        "--san-pattern",
        type=_pattern,
        action="append",
        metavar="KIND=REGEX",
        help="entries of KIND must match REGEX in full",
    )
    p.add_argument("--max-sans", type=int, default=8)
    p.add_argument("--cn-pattern", metavar="REGEX")
    p.add_argument("--max-validity", type=days, default=365)
    p.add_argument(
        "--key-type",
        type=KeyType,
        action="append",
        choices=list(KeyType),
        help="allowed CSR key types (default all of them)",
    )
    p = add_command(sub, "show", profile_show, "show a profile")
    p.add_argument("name")
    add_command(sub, "list", profile_list, "list profiles")
