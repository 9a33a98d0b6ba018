"""Garbage sent to every command issue 14 added, over the real bus: each is answered
``invalid`` with a one-line reason naming the field, and its worker keeps answering.
"""

from __future__ import annotations

import pytest

from ca_worker.settings import Settings as CaSettings
from contracts.ca import ListCAs
from contracts.dms import ListDMSs
from contracts.errors import ErrorCode
from runtime.bus import Bus
from tests.device_worker.device_bus import envelope_bytes, publish_raw
from tests.pki import call

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

GARBAGE = {
    "dms.transfer-device": ({"device_id": "pump 1", "dms": "a"}, "device_id"),
    "dms.update-policy": ({"name": "a", "reenroll_window_days": -3}, "reenroll_window"),
    "dms.renew": ({"name": "a", "overlap_days": "soon"}, "csr_pem"),
    "enrollment.authorize": ({"kind": "steal", "label": "x"}, "kind"),
    "profile.create": (
        {"name": "p", "san_patterns": {"dns": "("}},
        "regular expression",
    ),
    "profile.get": ({"name": ""}, "name"),
    "certificate.revoke-device": ({"device_id": ["x"]}, "device_id"),
}


@pytest.mark.parametrize(("type_", "case"), GARBAGE.items(), ids=list(GARBAGE))
async def test_new_commands_refuse_garbage(
    ca_service: CaSettings,
    dms_service: None,
    device_service: None,
    bus: Bus,
    *,
    type_: str,
    case: tuple[dict[str, object], str],
) -> None:
    """invalid, one line naming the field; the workers still answer afterwards."""
    data, field = case
    [reply], _ = await publish_raw(
        ca_service, "commands", type_, [envelope_bytes(type_, data)]
    )
    assert reply.error is not None
    assert ErrorCode.INVALID is reply.error.code
    assert field in reply.error.message
    assert 1 == len(reply.error.message.splitlines())
    assert (await call(bus, ListCAs())).ok
    assert (await call(bus, ListDMSs())).ok
