"""Who may send each message type on the bus, and what each identity consumes (DESIGN §2a).

The one table of the trust boundary: the consumers' sender check (``runtime``), the
broker's permissions and topic permissions (``lamassu bus setup``) and the README's
table are all derived from it. A broker user's role is its name without the
deployment's prefix (``AMQP_PREFIX``: empty in production, where the CA worker's user
is ``ca-worker``; ``<run>.`` in tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from contracts.catalog import COMMANDS

__all__ = [
    "FORWARDS",
    "IDENTITIES",
    "OWNERS",
    "ROLES",
    "SENDERS",
    "Identity",
    "Kind",
    "answerers",
    "may_send",
    "role_of",
]

Kind = Literal["commands", "events"]

CA, DMS, DEVICE, GATEWAY = "ca-worker", "dms-worker", "device-worker", "est-gateway"
VA, ALERTS, CLOUD = "va-worker", "alerts-worker", "cloud-proxy"
ADMIN, OBSERVER = "admin", "observer"


@dataclass(frozen=True, slots=True)
class Identity:
    """What a role does on the broker besides sending: the worker schema whose queues
    it declares and consumes (None: it has none), and the (exchange, binding key)
    pairs its queues and subscriptions bind."""

    worker: str | None
    binds: tuple[tuple[Kind, str], ...]
    summary: str


IDENTITIES: Mapping[str, Identity] = {
    CA: Identity(
        "ca",
        (
            ("commands", "ca.*"),
            ("commands", "certificate.*"),
            ("commands", "profile.*"),
            ("commands", "sweep.run"),
            ("commands", "sweep.get"),
            ("commands", "sweep.shard"),
            ("commands", "crl.sign"),
            ("commands", "ocsp.responder.issue"),
        ),
        "signs with the CA keys: issues, revokes, signs CRLs",
    ),
    DMS: Identity(
        "dms",
        (
            ("commands", "dms.*"),
            ("commands", "enrollment.*"),
            ("events", "certificate.create"),
            ("events", "certificate.status.update"),
            ("events", "device.decommissioned"),
            ("events", "device.ownership.update"),
        ),
        "authorizes enrollments and forwards them to the CA worker",
    ),
    DEVICE: Identity(
        "devices",
        (
            ("commands", "device.*"),
            ("events", "certificate.create"),
            ("events", "certificate.status.update"),
            ("events", "dms.create"),
            ("events", "dms.update"),
            ("events", "device.ownership.update"),
        ),
        "keeps the device inventory; revokes a decommissioned device's certificates",
    ),
    GATEWAY: Identity(
        None,
        (("events", "ca.#"), ("events", "dms.create"), ("events", "dms.update")),
        "EST front door: turns authenticated HTTP requests into enrollments",
    ),
    VA: Identity(
        "va",
        (
            ("commands", "crl.get"),
            ("events", "ca.create"),
            ("events", "ca.status.update"),
            ("events", "certificate.create"),
            ("events", "certificate.status.update"),
            ("events", "crl.create"),
        ),
        "serves OCSP and CRLs; asks the CA worker to sign them",
    ),
    ALERTS: Identity(
        "alerts",
        (("commands", "alert.*"), ("events", "#")),
        "reads every event, delivers alerts",
    ),
    CLOUD: Identity(
        "cloud",
        (
            ("commands", "cloud.*"),
            ("events", "ca.create"),
            ("events", "ca.status.update"),
            ("events", "certificate.create"),
            ("events", "certificate.status.update"),
            ("events", "device.decommissioned"),
        ),
        "mirrors CAs and certificates to a cloud IoT registry",
    ),
    ADMIN: Identity(
        None, (("events", "#"),), "operator: the admin commands and queries"
    ),
    OBSERVER: Identity(None, (("events", "#"),), "reads events; sends nothing"),
}

ROLES = tuple(IDENTITIES)

# The role that answers each worker's commands (catalog ``Operation.worker``).
OWNERS: Mapping[str, str] = {
    "ca": CA,
    "dms": DMS,
    "devices": DEVICE,
    "va": VA,
    "alerts": ALERTS,
    "cloud": CLOUD,
}

_ADMIN_ONLY = frozenset({ADMIN})

_COMMAND_SENDERS: Mapping[str, frozenset[str]] = {
    "ca.create": _ADMIN_ONLY,
    "ca.get": frozenset({ADMIN, DMS, CLOUD}),
    "ca.list": frozenset({ADMIN, GATEWAY, VA}),
    "ca.revoke": _ADMIN_ONLY,
    "ca.update": _ADMIN_ONLY,
    # The operator's tools (lamassu status, engine check).
    "ca.engines": _ADMIN_ONLY,
    "ca.stats": _ADMIN_ONLY,
    "certificate.sign": frozenset({ADMIN, DMS, CLOUD}),
    "certificate.get": _ADMIN_ONLY,
    "certificate.list": frozenset({ADMIN, VA, CLOUD}),
    "certificate.revoke": frozenset({ADMIN, DEVICE}),
    # Decommissioning revokes every certificate a device held (issue 14).
    "certificate.revoke-device": frozenset({DEVICE}),
    "profile.create": _ADMIN_ONLY,
    "profile.get": _ADMIN_ONLY,
    "profile.list": _ADMIN_ONLY,
    # Issuance on behalf of a DMS: only the DMS worker, which authorized it.
    "certificate.issue": frozenset({DMS}),
    "sweep.run": _ADMIN_ONLY,
    "sweep.get": _ADMIN_ONLY,
    "sweep.shard": frozenset({CA}),
    "crl.sign": frozenset({ADMIN, VA}),
    "ocsp.responder.issue": frozenset({VA}),
    "crl.get": _ADMIN_ONLY,
    "dms.create": _ADMIN_ONLY,
    "dms.update-authorized-cas": _ADMIN_ONLY,
    "dms.revoke": _ADMIN_ONLY,
    "dms.get": _ADMIN_ONLY,
    "dms.list": frozenset({ADMIN, GATEWAY}),
    "dms.update-policy": _ADMIN_ONLY,
    "dms.renew": _ADMIN_ONLY,
    "dms.transfer-device": _ADMIN_ONLY,
    # serverkeygen asks before it makes a key: only the gateway saw the TLS client.
    "enrollment.authorize": frozenset({GATEWAY}),
    # Only the gateway has checked the client's TLS certificate (RFC 7030 §3.3.2).
    "enrollment.request": frozenset({GATEWAY}),
    "device.register": _ADMIN_ONLY,
    "device.decommission": _ADMIN_ONLY,
    "device.get": _ADMIN_ONLY,
    "device.list": _ADMIN_ONLY,
    "cloud.connect": _ADMIN_ONLY,
    "cloud.status": _ADMIN_ONLY,
    "cloud.reconcile": _ADMIN_ONLY,
    "alert.subscribe": _ADMIN_ONLY,
    "alert.list": _ADMIN_ONLY,
    "alert.get": _ADMIN_ONLY,
    "alert.delete": _ADMIN_ONLY,
    "alert.test": _ADMIN_ONLY,
    "alert.deliveries": _ADMIN_ONLY,
}

_EVENT_SENDERS: Mapping[str, frozenset[str]] = {
    "ca.create": frozenset({CA}),
    "ca.status.update": frozenset({CA}),
    "ca.update": frozenset({CA}),
    "certificate.create": frozenset({CA}),
    "certificate.status.update": frozenset({CA}),
    "crl.create": frozenset({CA}),
    "dms.create": frozenset({DMS}),
    "dms.update": frozenset({DMS}),
    "dms.enroll": frozenset({DMS}),
    "dms.reenroll": frozenset({DMS}),
    "device.create": frozenset({DEVICE}),
    "device.status.update": frozenset({DEVICE}),
    "device.identity.update": frozenset({DEVICE}),
    "device.decommissioned": frozenset({DEVICE}),
    # A registration (device worker) or a transfer (DMS worker) names a device's owner.
    "device.ownership.update": frozenset({DEVICE, DMS}),
    "cloud.sync.failed": frozenset({CLOUD}),
    "alert.delivery.failed": frozenset({ALERTS}),
}

# Commands and events are separate namespaces (``ca.create`` is both): the exchange a
# message came through says which table applies.
SENDERS: Mapping[Kind, Mapping[str, frozenset[str]]] = {
    "commands": _COMMAND_SENDERS,
    "events": _EVENT_SENDERS,
}


def role_of(user_id: str | None, prefix: str) -> str | None:
    """The role of a broker user of this deployment, or None for any other user."""
    if user_id is None or not user_id.startswith(prefix):
        return None
    role = user_id.removeprefix(prefix)
    return role if role in IDENTITIES else None


def may_send(role: str | None, kind: Kind, type_: str) -> bool:
    """Whether ``role`` may send a message of ``type_`` through the ``kind`` exchange."""
    return role is not None and role in SENDERS[kind].get(type_, frozenset())


def answerers(type_: str) -> frozenset[str]:
    """The roles whose reply to a request of ``type_`` is believed: its owner, and the
    owners of what it forwards (an enrollment is answered by the CA worker)."""
    owners = {OWNERS[COMMANDS[type_].worker]} if type_ in COMMANDS else set()
    for forwarded in FORWARDS.get(type_, ()):
        owners |= answerers(forwarded)
    return frozenset(owners)


# Requests a worker hands on with ``Outcome.forward`` (the reply comes from further on).
FORWARDS: Mapping[str, tuple[str, ...]] = {"enrollment.request": ("certificate.issue",)}
