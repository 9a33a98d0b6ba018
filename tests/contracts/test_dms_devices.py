"""Tests of the DMS, enrollment and device contracts: frozen, tolerant, JSON-stable."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from contracts import devices, dms
from contracts.ca import CertificateStatus, RevocationReason

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CSR_ID = "ab" * 32

DMS_VIEW = dms.DMSView(
    name="dms-1",
    status=dms.DMSStatus.ACTIVE,
    authorized_cas=["device-ca"],
    certificate_serial="0a01",
    certificate_pem=PEM,
    created_at=NOW,
)
REVOKED_DMS_VIEW = DMS_VIEW.model_copy(
    update={
        "status": dms.DMSStatus.REVOKED,
        "revoked_at": NOW,
        "revocation_reason": RevocationReason.KEY_COMPROMISE,
    }
)
ENROLLED = {
    "dms": "dms-1",
    "device_id": "dev-1",
    "slot": "default",
    "serial": "0b01",
    "ca": "device-ca",
    "not_before": NOW,
    "not_after": NOW,
}
SLOT = devices.SlotView(
    name="default",
    certificate_serial="0b01",
    certificate_status=CertificateStatus.ACTIVE,
    not_after=NOW,
)
DEVICE_VIEW = devices.DeviceView(
    id="dev-1",
    dms="dms-1",
    status=devices.DeviceStatus.FULLY_PROVISIONED,
    slots=[SLOT, devices.SlotView(name="tpm")],
    created_at=NOW,
)
DECOMMISSIONED_VIEW = DEVICE_VIEW.model_copy(
    update={"status": devices.DeviceStatus.DECOMMISSIONED, "decommissioned_at": NOW}
)

OWNERSHIP = dms.DeviceOwnership(device_id="dev-1", dms="dms-2", since=NOW)

# One instance of every model the two modules export.
SAMPLES: dict[type[BaseModel], BaseModel] = {
    dms.CreateDMS: dms.CreateDMS(
        name="dms-1", authorized_cas=["device-ca"], csr_pem=PEM
    ),
    dms.UpdateAuthorizedCAs: dms.UpdateAuthorizedCAs(
        name="dms-1", add=["ca-2"], remove=["device-ca"]
    ),
    dms.RevokeDMS: dms.RevokeDMS(name="dms-1", reason=RevocationReason.KEY_COMPROMISE),
    dms.GetDMS: dms.GetDMS(name="dms-1"),
    dms.ListDMSs: dms.ListDMSs(status=dms.DMSStatus.ACTIVE, limit=10, after="dms-0"),
    dms.EnrollmentRequest: dms.EnrollmentRequest(
        kind=dms.EnrollmentKind.REENROLL,
        label="device-ca",
        csr_pem=PEM,
        client_certificate_chain_pem=[PEM, PEM],
        request_id=CSR_ID,
    ),
    dms.DMSView: DMS_VIEW,
    dms.DMSCreated: dms.DMSCreated.of(DMS_VIEW),
    dms.DMSs: dms.DMSs(items=[DMS_VIEW, REVOKED_DMS_VIEW]),
    dms.DMSUpdate: dms.DMSUpdate(previous=DMS_VIEW, updated=REVOKED_DMS_VIEW),
    dms.DMSEnrolled: dms.DMSEnrolled.model_validate(ENROLLED),
    dms.DMSReenrolled: dms.DMSReenrolled.model_validate(ENROLLED),
    devices.RegisterDevice: devices.RegisterDevice(
        id="dev-1", dms="dms-1", slots=["default", "tpm"]
    ),
    devices.DecommissionDevice: devices.DecommissionDevice(id="dev-1"),
    devices.GetDevice: devices.GetDevice(id="dev-1"),
    devices.ListDevices: devices.ListDevices(
        status=devices.DeviceStatus.REQUIRES_ACTION, limit=10, after="dev-0"
    ),
    devices.SlotView: SLOT,
    devices.DeviceView: DEVICE_VIEW,
    devices.DeviceCreated: devices.DeviceCreated.of(DEVICE_VIEW),
    devices.DeviceDecommissioned: devices.DeviceDecommissioned.of(DECOMMISSIONED_VIEW),
    devices.Devices: devices.Devices(items=[DEVICE_VIEW]),
    devices.DeviceStatusUpdate: devices.DeviceStatusUpdate(
        previous=DEVICE_VIEW, updated=DECOMMISSIONED_VIEW
    ),
    devices.DeviceIdentityUpdate: devices.DeviceIdentityUpdate(
        previous=DEVICE_VIEW, updated=DEVICE_VIEW
    ),
    dms.TransferDevice: dms.TransferDevice(device_id="dev-1", dms="dms-2"),
    dms.RenewDMS: dms.RenewDMS(name="dms-1", csr_pem=PEM, overlap_days=3),
    dms.AuthorizeEnrollment: dms.AuthorizeEnrollment(
        kind=dms.EnrollmentKind.SERVERKEYGEN,
        label="device-ca",
        csr_pem=PEM,
        request_id=CSR_ID,
    ),
    dms.EnrollmentAuthorization: dms.EnrollmentAuthorization(
        device_id="dev-1", slot="default", dms="dms-1"
    ),
    dms.UpdateDMSPolicy: dms.UpdateDMSPolicy(
        name="dms-1", reenroll_window_days=30, revoke_on_reenroll=False
    ),
    dms.DeviceOwnership: OWNERSHIP,
    dms.DeviceOwnershipUpdate: dms.DeviceOwnershipUpdate(
        previous=None, updated=OWNERSHIP
    ),
}
SAMPLE_IDS = [model.__name__ for model in SAMPLES]


def test_every_exported_model_has_a_sample() -> None:
    """Each model the modules export is covered by the table-driven tests below."""
    exported = [
        getattr(module, name) for module in (dms, devices) for name in module.__all__
    ]
    expected = {
        item
        for item in exported
        if isinstance(item, type) and issubclass(item, BaseModel)
    }

    actual = set(SAMPLES)

    assert expected == actual


@pytest.mark.parametrize("instance", SAMPLES.values(), ids=SAMPLE_IDS)
def test_models_are_frozen(instance: BaseModel) -> None:
    """Assigning to a field of any contract model fails."""
    field = next(iter(type(instance).model_fields))

    with pytest.raises(ValidationError, match="frozen"):
        setattr(instance, field, getattr(instance, field))


@pytest.mark.parametrize("instance", SAMPLES.values(), ids=SAMPLE_IDS)
def test_models_ignore_unknown_fields(instance: BaseModel) -> None:
    """A field a newer producer added is dropped, not refused (tolerant reader)."""
    data = {**instance.model_dump(mode="json"), "added_in_a_later_version": 1}

    actual = type(instance).model_validate(data)

    assert instance == actual


@pytest.mark.parametrize("instance", SAMPLES.values(), ids=SAMPLE_IDS)
def test_models_round_trip_json(instance: BaseModel) -> None:
    """Dumping to JSON and validating it back gives an equal model."""
    actual = type(instance).model_validate_json(instance.model_dump_json())

    assert instance == actual


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (dms.CreateDMS, "dms.create"),
        (dms.UpdateAuthorizedCAs, "dms.update-authorized-cas"),
        (dms.RevokeDMS, "dms.revoke"),
        (dms.GetDMS, "dms.get"),
        (dms.ListDMSs, "dms.list"),
        (dms.EnrollmentRequest, "enrollment.request"),
        (dms.DMSUpdate, "dms.update"),
        (dms.DMSEnrolled, "dms.enroll"),
        (dms.DMSReenrolled, "dms.reenroll"),
        (devices.RegisterDevice, "device.register"),
        (devices.DecommissionDevice, "device.decommission"),
        (devices.GetDevice, "device.get"),
        (devices.ListDevices, "device.list"),
        (devices.DeviceStatusUpdate, "device.status.update"),
        (devices.DeviceIdentityUpdate, "device.identity.update"),
        (dms.TransferDevice, "dms.transfer-device"),
        (dms.UpdateDMSPolicy, "dms.update-policy"),
        (dms.RenewDMS, "dms.renew"),
        (dms.AuthorizeEnrollment, "enrollment.authorize"),
        (dms.DeviceOwnershipUpdate, "device.ownership.update"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else value,
)
def test_type_strings(model: type[BaseModel], expected: str) -> None:
    """Type strings are the ones DESIGN §2 names, so the original system's consumers port."""
    actual = getattr(model, "TYPE", None)

    assert expected == actual


def test_register_device_defaults_to_one_default_slot() -> None:
    """A device registered without slots gets the single slot named default."""
    expected = ["default"]

    actual = devices.RegisterDevice(id="dev-1").slots

    assert expected == actual


INVALID: dict[str, tuple[type[BaseModel], dict[str, Any], str]] = {
    "policy update that changes nothing": (
        dms.UpdateDMSPolicy,
        {"name": "dms-1"},
        "nothing to change",
    ),
    "negative re-enrollment window": (
        dms.UpdateDMSPolicy,
        {"name": "dms-1", "reenroll_window_days": -1},
        "greater than or equal to 0",
    ),
    "transfer to a DMS named with a space": (
        dms.TransferDevice,
        {"device_id": "dev-1", "dms": "dms 2"},
        "String should match pattern",
    ),
    "DMS without authorized CAs": (
        dms.CreateDMS,
        {"name": "dms-1", "authorized_cas": []},
        "at least 1 item",
    ),
    "DMS with a CA listed twice": (
        dms.CreateDMS,
        {"name": "dms-1", "authorized_cas": ["ca-1", "ca-2", "ca-1"]},
        "authorized_cas lists ca-1 more than once",
    ),
    "DMS named with a space": (
        dms.CreateDMS,
        {"name": "dms 1", "authorized_cas": ["ca-1"]},
        "should match pattern",
    ),
    "allow-list update that changes nothing": (
        dms.UpdateAuthorizedCAs,
        {"name": "dms-1"},
        "nothing to change",
    ),
    "allow-list update adding and removing one CA": (
        dms.UpdateAuthorizedCAs,
        {"name": "dms-1", "add": ["ca-1"], "remove": ["ca-1"]},
        "ca-1 is both added and removed",
    ),
    "enrollment with a request id that is no SHA-256": (
        dms.EnrollmentRequest,
        {"kind": "enroll", "label": "ca-1", "csr_pem": PEM, "request_id": "abc"},
        "should match pattern",
    ),
    "enrollment of an unknown kind": (
        dms.EnrollmentRequest,
        {"kind": "renew", "label": "ca-1", "csr_pem": PEM, "request_id": CSR_ID},
        "'enroll', 'reenroll' or 'serverkeygen'",
    ),
    "device id with the slot separator": (
        devices.RegisterDevice,
        {"id": "tpm:dev-1"},
        "should match pattern",
    ),
    "device without slots": (
        devices.RegisterDevice,
        {"id": "dev-1", "slots": []},
        "at least 1 item",
    ),
    "device with a slot listed twice": (
        devices.RegisterDevice,
        {"id": "dev-1", "slots": ["default", "default"]},
        "slots lists default more than once",
    ),
    "device list with an unknown status": (
        devices.ListDevices,
        {"status": "ACTIVE"},
        "Input should be",
    ),
}


@pytest.mark.parametrize(
    ("model", "data", "expected"), INVALID.values(), ids=list(INVALID)
)
def test_invalid_messages_are_refused(
    model: type[BaseModel], data: dict[str, Any], expected: str
) -> None:
    """A malformed command is refused with a message naming the problem."""
    with pytest.raises(ValidationError, match=re.escape(expected)):
        model.model_validate(data)
