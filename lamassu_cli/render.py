"""Human output of the CLI (``--json`` bypasses it)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from contracts.ca import CAView, CertificateView
from contracts.devices import DeviceView
from contracts.dms import DMSView
from contracts.envelope import CloudEvent
from contracts.sweeps import SweepView

__all__ = [
    "ca_detail",
    "cas_table",
    "certificate_detail",
    "certificates_table",
    "device_detail",
    "devices_table",
    "dms_detail",
    "dms_table",
    "event_line",
    "sweep_detail",
    "table",
]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
        for i, h in enumerate(headers)
    ]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    ]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]
    return "\n".join(lines)


def _date(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ")


def cas_table(cas: Sequence[CAView]) -> str:
    return table(
        ["NAME", "STATUS", "KEY", "PARENT", "NOT AFTER", "SERIAL"],
        [
            [
                c.name + (" (internal)" if c.internal else ""),
                c.status.value,
                c.key_type.value,
                c.parent or "-",
                _date(c.not_after),
                c.serial,
            ]
            for c in cas
        ],
    )


def ca_detail(ca: CAView) -> str:
    rows = [
        ("name", ca.name),
        ("internal", "yes" if ca.internal else "no"),
        ("parent", ca.parent or "-"),
        ("status", ca.status.value),
        ("subject", ca.subject),
        ("serial", ca.serial),
        ("key", f"{ca.key_type.value} in {ca.engine} ({ca.key_id[:16]}...)"),
        ("not before", _date(ca.not_before)),
        ("not after", _date(ca.not_after)),
        ("warns", f"{ca.about_to_expire_days} days before expiry"),
        ("profile", ca.profile or "client"),
    ]
    if ca.revoked_at is not None:
        rows.append(("revoked", f"{_date(ca.revoked_at)} ({ca.revocation_reason})"))
    return "\n".join(f"{k:<11} {v}" for k, v in rows)


def certificates_table(certs: Sequence[CertificateView]) -> str:
    return table(
        ["SERIAL", "STATUS", "CA", "SUBJECT", "NOT AFTER"],
        [
            [c.serial, c.status.value, c.ca, c.subject, _date(c.not_after)]
            for c in certs
        ],
    )


def certificate_detail(cert: CertificateView) -> str:
    rows = [
        ("serial", cert.serial),
        ("status", cert.status.value),
        ("ca", cert.ca),
        ("subject", cert.subject),
        ("issuer", cert.issuer),
        ("not before", _date(cert.not_before)),
        ("not after", _date(cert.not_after)),
    ]
    if cert.revoked_at is not None:
        rows.append(("revoked", f"{_date(cert.revoked_at)} ({cert.revocation_reason})"))
    return "\n".join(f"{k:<11} {v}" for k, v in rows)


def event_line(event: CloudEvent) -> str:
    return f"{_date(event.time)}  {event.type:<28} {event.subject or '-'}"


def dms_detail(dms: DMSView) -> str:
    rows = [
        ("name", dms.name),
        ("status", dms.status.value),
        ("allowed CAs", ", ".join(dms.authorized_cas)),
        ("serial", dms.certificate_serial),
        ("created", _date(dms.created_at)),
        ("replace", "allowed" if dms.allow_replace else "refused"),
        ("pop link", "required" if dms.require_pop else "optional"),
        (
            "renewal",
            (
                "any time"
                if dms.reenroll_window_days == 0
                else f"{dms.reenroll_window_days} days before expiry"
            )
            + (", revokes the old" if dms.revoke_on_reenroll else ", keeps the old"),
        ),
    ]
    if dms.previous_certificate_serial and dms.previous_valid_until:
        rows.append(
            (
                "previous",
                f"{dms.previous_certificate_serial} until "
                + _date(dms.previous_valid_until),
            )
        )
    if dms.revoked_at is not None:
        rows.append(("revoked", f"{_date(dms.revoked_at)} ({dms.revocation_reason})"))
    return "\n".join(f"{k:<11} {v}" for k, v in rows)


def dms_table(items: Sequence[DMSView]) -> str:
    return table(
        ["NAME", "STATUS", "ALLOWED CAS", "SERIAL"],
        [
            [d.name, d.status.value, ",".join(d.authorized_cas), d.certificate_serial]
            for d in items
        ],
    )


def devices_table(items: Sequence[DeviceView]) -> str:
    return table(
        ["ID", "STATUS", "DMS", "SLOTS"],
        [
            [
                d.id,
                d.status.value,
                d.dms or "-",
                " ".join(f"{s.name}:{s.certificate_status or '-'}" for s in d.slots),
            ]
            for d in items
        ],
    )


def device_detail(device: DeviceView) -> str:
    lines = [
        f"id          {device.id}",
        f"status      {device.status.value}",
        f"dms         {device.dms or '-'}",
        f"created     {_date(device.created_at)}",
    ]
    if device.decommissioned_at is not None:
        lines.append(f"retired     {_date(device.decommissioned_at)}")
    for slot in device.slots:
        expiry = _date(slot.not_after) if slot.not_after else "-"
        lines.append(
            f"slot        {slot.name}: {slot.certificate_serial or '(no certificate)'} "
            f"{slot.certificate_status or ''} until {expiry}".rstrip()
        )
    return "\n".join(lines)


def sweep_detail(sweep: SweepView) -> str:
    rows = [
        ("sweep", sweep.id),
        ("trigger", sweep.trigger.value),
        ("as of", sweep.as_of.isoformat(timespec="seconds")),
        ("shards", f"{sweep.shards_done} of {sweep.shards} done"),
        ("changed", f"{sweep.transitions} certificates, {sweep.ca_transitions} CAs"),
    ]
    return "\n".join(f"{k:<8} {v}" for k, v in rows)
