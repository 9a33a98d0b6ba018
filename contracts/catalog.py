"""Every message type on the bus, as data: the one place a type string meets its model.

Workers route with their own tables (``handlers.py``); these name each command's owner
for the CLI, validate every event for the alerts worker, and feed ``asyncapi.py`` and
the sender table's tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from contracts import alerts, ca, cloud, devices, dms, ops, profiles, sweeps, va
from contracts.message import Message, Model

__all__ = ["COMMANDS", "EVENTS", "Operation"]


@dataclass(frozen=True, slots=True)
class Operation:
    """A command or query: its request model, the result it replies with, its owner."""

    request: type[Message]
    result: type[Model] | None
    worker: str


def _ops(
    *entries: tuple[type[Message], type[Model] | None, str],
) -> dict[str, Operation]:
    return {req.TYPE: Operation(req, res, worker) for req, res, worker in entries}


COMMANDS: Mapping[str, Operation] = _ops(
    (ca.CreateCA, ca.CAView, "ca"),
    (ca.GetCA, ca.CAView, "ca"),
    (ca.ListCAs, ca.CAs, "ca"),
    (ca.RevokeCA, ca.CAView, "ca"),
    (ca.SignCertificate, ca.CertificateView, "ca"),
    (ca.GetCertificate, ca.CertificateView, "ca"),
    (ca.ListCertificates, ca.Certificates, "ca"),
    (ca.RevokeCertificate, ca.CertificateView, "ca"),
    (ca.IssueCertificate, ca.CertificateView, "ca"),
    (ca.UpdateCA, ca.CAView, "ca"),
    (sweeps.RunSweep, sweeps.SweepView, "ca"),
    (sweeps.GetSweep, sweeps.SweepView, "ca"),
    (sweeps.SweepShard, sweeps.SweepView, "ca"),
    (dms.CreateDMS, dms.DMSView, "dms"),
    (dms.UpdateAuthorizedCAs, dms.DMSView, "dms"),
    (dms.RevokeDMS, dms.DMSView, "dms"),
    (dms.GetDMS, dms.DMSView, "dms"),
    (dms.ListDMSs, dms.DMSs, "dms"),
    (dms.EnrollmentRequest, ca.CertificateView, "dms"),
    (devices.RegisterDevice, devices.DeviceView, "devices"),
    (devices.DecommissionDevice, devices.DeviceView, "devices"),
    (devices.GetDevice, devices.DeviceView, "devices"),
    (devices.ListDevices, devices.Devices, "devices"),
    (cloud.ConnectCA, cloud.ConnectionView, "cloud"),
    (cloud.GetCloudStatus, cloud.CloudStatus, "cloud"),
    (cloud.Reconcile, cloud.CloudStatus, "cloud"),
    (alerts.Subscribe, alerts.SubscriptionView, "alerts"),
    (alerts.ListSubscriptions, alerts.Subscriptions, "alerts"),
    (alerts.GetSubscription, alerts.SubscriptionView, "alerts"),
    (alerts.DeleteSubscription, alerts.SubscriptionView, "alerts"),
    (alerts.AlertTest, alerts.DeliveryView, "alerts"),
    (alerts.ListDeliveries, alerts.Deliveries, "alerts"),
    (va.SignCRL, va.CRLView, "ca"),
    (va.IssueResponderCertificate, ca.CertificateView, "ca"),
    (va.GetCRL, va.CRLView, "va"),
    (dms.TransferDevice, dms.DeviceOwnership, "dms"),
    (dms.UpdateDMSPolicy, dms.DMSView, "dms"),
    (ca.RevokeDeviceCertificates, ca.Certificates, "ca"),
    (dms.AuthorizeEnrollment, dms.EnrollmentAuthorization, "dms"),
    (dms.RenewDMS, dms.DMSView, "dms"),
    (profiles.CreateProfile, profiles.ProfileView, "ca"),
    (profiles.GetProfile, profiles.ProfileView, "ca"),
    (profiles.ListProfiles, profiles.Profiles, "ca"),
    (ops.CheckEngines, ops.EngineChecks, "ca"),
    (ops.GetCAStats, ops.CAStats, "ca"),
)

EVENTS: Mapping[str, type[Message]] = {
    event.TYPE: event
    for event in (
        ca.CACreated,
        ca.CAStatusUpdate,
        ca.CAUpdate,
        ca.CertificateCreated,
        ca.CertificateStatusUpdate,
        dms.DMSCreated,
        dms.DMSUpdate,
        dms.DMSEnrolled,
        dms.DMSReenrolled,
        dms.DeviceOwnershipUpdate,
        devices.DeviceCreated,
        devices.DeviceStatusUpdate,
        devices.DeviceIdentityUpdate,
        devices.DeviceDecommissioned,
        cloud.CloudSyncFailed,
        alerts.AlertDeliveryFailed,
        va.CRLCreated,
    )
}
