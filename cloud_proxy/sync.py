"""What a cloud platform should hold for each CA and device certificate, and the steps
that bring it there from what it holds. Pure: no I/O, ``now`` is passed in.

The same rules serve the event-driven path (one item, after an event) and
reconciliation (every item of a connector, against what the platform lists), so an
outage or a lost event is healed by exactly the steps the event would have caused.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contracts.ca import CertificateStatus
from contracts.cloud import ConnectionMode

__all__ = [
    "AttachPolicy",
    "AttachPrincipal",
    "CATarget",
    "CertificateTarget",
    "Connection",
    "EnsureThing",
    "RegisterCA",
    "RegisterCertificate",
    "RemoteCertificate",
    "RemoteState",
    "RemoteStatus",
    "RemoveCertificate",
    "SetCAStatus",
    "SetCertificateStatus",
    "Step",
    "backoff",
    "certificate_id",
    "desired_ca_status",
    "desired_certificate_status",
    "jitp_template",
    "out_of_step",
    "plan_ca",
    "plan_certificate",
    "thing_name",
]

_LIVE = {CertificateStatus.ACTIVE, CertificateStatus.ABOUT_TO_EXPIRE}


class RemoteStatus(enum.StrEnum):
    """Certificate statuses of AWS IoT Core that the proxy sets (CreateCertificate API)."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    REVOKED = "REVOKED"


@dataclass(frozen=True, slots=True)
class Connection:
    ca: str
    connector: str
    mode: ConnectionMode
    policy: str | None = None
    thing_group: str | None = None
    provisioning_role_arn: str | None = None


@dataclass(frozen=True, slots=True)
class CATarget:
    connection: Connection
    certificate_pem: str
    status: CertificateStatus


@dataclass(frozen=True, slots=True)
class CertificateTarget:
    """A device certificate as the projection knows it, with its connection."""

    connection: Connection
    serial: str
    device_id: str
    certificate_pem: str
    ca_certificate_pem: str | None
    status: CertificateStatus
    replaced: bool
    decommissioned: bool


@dataclass(frozen=True, slots=True)
class RemoteCertificate:
    id: str
    arn: str
    status: str


@dataclass(frozen=True, slots=True)
class RemoteState:
    """What a platform lists: CA and device certificate statuses by id, thing names."""

    cas: Mapping[str, str]
    certificates: Mapping[str, str]
    things: frozenset[str]


# --- steps -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisterCA:
    status: RemoteStatus
    # BYO-CA: AWS asks for a certificate signed by the CA over its registration code
    # (the ownership proof); SNI_ONLY registration needs none.
    needs_verification: bool
    sni_only: bool
    template: str | None


@dataclass(frozen=True, slots=True)
class SetCAStatus:
    status: RemoteStatus


@dataclass(frozen=True, slots=True)
class RegisterCertificate:
    status: RemoteStatus
    # SNI_ONLY CAs: the device certificate is registered without its CA.
    with_ca: bool


@dataclass(frozen=True, slots=True)
class SetCertificateStatus:
    status: RemoteStatus


@dataclass(frozen=True, slots=True)
class EnsureThing:
    name: str
    thing_group: str | None


@dataclass(frozen=True, slots=True)
class AttachPrincipal:
    thing: str


@dataclass(frozen=True, slots=True)
class AttachPolicy:
    policy: str


@dataclass(frozen=True, slots=True)
class RemoveCertificate:
    """Detach policies and things, deactivate, delete; then the thing, once empty."""

    thing: str
    present: bool


Step = (
    RegisterCA
    | SetCAStatus
    | RegisterCertificate
    | SetCertificateStatus
    | EnsureThing
    | AttachPrincipal
    | AttachPolicy
    | RemoveCertificate
)


# --- rules -----------------------------------------------------------------------------


def certificate_id(certificate_pem: str) -> str:
    """AWS IoT's certificate id: the SHA-256 of the DER certificate, lower-case hex."""
    der = x509.load_pem_x509_certificate(certificate_pem.encode()).public_bytes(
        serialization.Encoding.DER
    )
    return hashlib.sha256(der).hexdigest()


def thing_name(device_id: str) -> str:
    """AWS thing names allow ``[a-zA-Z0-9:_-]``; device ids allow dots but no colon,
    so a dot becomes a colon and no two devices share a thing."""
    return device_id.replace(".", ":")


def desired_ca_status(status: CertificateStatus) -> RemoteStatus:
    return RemoteStatus.ACTIVE if status in _LIVE else RemoteStatus.INACTIVE


def desired_certificate_status(target: CertificateTarget) -> RemoteStatus | None:
    """None: the platform should hold nothing of it (its device was decommissioned)."""
    if target.decommissioned:
        return None
    if target.status is CertificateStatus.REVOKED:
        return RemoteStatus.REVOKED
    if target.status not in _LIVE or target.replaced:
        # Replaced by a re-enrollment or expired: AWS would still accept it.
        return RemoteStatus.INACTIVE
    return RemoteStatus.ACTIVE


def jitp_template(policy: str | None, thing_group: str | None) -> str:
    """The provisioning template of a JITP CA: the thing is named after the
    certificate's CN (``[slot:]device-id``), the certificate is activated, and the
    policy attached (AWS IoT developer guide, "Just-in-time provisioning")."""
    thing: dict[str, object] = {
        "ThingName": {"Ref": "AWS::IoT::Certificate::CommonName"}
    }
    if thing_group is not None:
        thing["ThingGroups"] = [thing_group]
    resources: dict[str, object] = {
        "thing": {"Type": "AWS::IoT::Thing", "Properties": thing},
        "certificate": {
            "Type": "AWS::IoT::Certificate",
            "Properties": {
                "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
                "Status": "ACTIVE",
            },
        },
    }
    if policy is not None:
        resources["policy"] = {
            "Type": "AWS::IoT::Policy",
            "Properties": {"PolicyName": policy},
        }
    parameters = {
        "AWS::IoT::Certificate::CommonName": {"Type": "String"},
        "AWS::IoT::Certificate::Id": {"Type": "String"},
    }
    return json.dumps(
        {"Parameters": parameters, "Resources": resources}, sort_keys=True
    )


def plan_ca(target: CATarget, remote_status: str | None) -> list[Step]:
    want = desired_ca_status(target.status)
    mode = target.connection.mode
    if remote_status is None:
        template = None
        if mode is ConnectionMode.JITP:
            template = jitp_template(
                target.connection.policy, target.connection.thing_group
            )
        sni_only = mode is ConnectionMode.SNI_ONLY
        return [RegisterCA(want, not sni_only, sni_only, template)]
    if remote_status != want:
        return [SetCAStatus(want)]
    return []


def plan_certificate(
    target: CertificateTarget, remote_status: str | None
) -> list[Step]:
    """The steps from ``remote_status`` (None: unknown to the platform) to the target.

    Attaching is idempotent in AWS, so a live certificate's thing, principal and policy
    are (re)asserted on every sync: a detached policy is repaired with the rest.
    """
    want = desired_certificate_status(target)
    thing = thing_name(target.device_id)
    if want is None:
        return [RemoveCertificate(thing, present=remote_status is not None)]
    mode = target.connection.mode
    steps: list[Step] = []
    if remote_status is None:
        if mode is ConnectionMode.JITP and want is RemoteStatus.ACTIVE:
            return []  # AWS registers it when the device first connects
        # A certificate that must not connect is registered as such, so that
        # just-in-time registration can never activate it later.
        steps.append(RegisterCertificate(want, mode is not ConnectionMode.SNI_ONLY))
    elif remote_status != want:
        steps.append(SetCertificateStatus(want))
    if want is RemoteStatus.ACTIVE and mode is not ConnectionMode.JITP:
        steps += [EnsureThing(thing, target.connection.thing_group)]
        steps.append(AttachPrincipal(thing))
        if target.connection.policy is not None:
            steps.append(AttachPolicy(target.connection.policy))
    return steps


def out_of_step(target: CertificateTarget | CATarget, remote: RemoteState) -> bool:
    """Whether the platform differs from the target in what it lists."""
    if isinstance(target, CATarget):
        ca_status = remote.cas.get(certificate_id(target.certificate_pem))
        return bool(plan_ca(target, ca_status))
    status = remote.certificates.get(certificate_id(target.certificate_pem))
    want = desired_certificate_status(target)
    thing = thing_name(target.device_id)
    if want is None:
        return status is not None or (
            thing in remote.things and target.connection.mode is not ConnectionMode.JITP
        )
    if (
        want is RemoteStatus.ACTIVE
        and target.connection.mode is not ConnectionMode.JITP
        and thing not in remote.things
    ):
        return True
    return any(
        isinstance(step, RegisterCertificate | SetCertificateStatus)
        for step in plan_certificate(target, status)
    )


def backoff(attempts: int, now: datetime, base: float, ceiling: float) -> datetime:
    """When a failed item is tried again: ``base`` doubled per attempt, capped."""
    return now + timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), ceiling))
