"""The slot bookkeeping of enrollment issuance (issue 14), around the rules of
``ca_worker.slots``: forget answers that died (so a same-meaning request enrolls
afresh), lock and check the slots a batch fills, fill them, and find what the new
certificates supersede. Called by ``handlers.issue_certificates`` in its transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from ca_worker.context import CaContext
from ca_worker.errors import SlotContended, SlotRefused
from ca_worker.slots import SlotHolder, repeated_slots, slot_key, slot_refusal
from contracts.ca import CertificateStatus, CertificateView, IssueCertificate

__all__ = ["check_slots", "fill_slots", "live_answers", "superseded"]

_USABLE = {CertificateStatus.ACTIVE, CertificateStatus.ABOUT_TO_EXPIRE}


async def live_answers(
    ctx: CaContext, answered: dict[str, CertificateView]
) -> dict[str, CertificateView]:
    """The earlier answers a retry gets: a request that means the same as one whose
    certificate is revoked or expired now (a device that kept its key and enrolls
    afresh) is a new enrollment, so the old answer lets go of its request id."""
    dead = [
        request_id
        for request_id, view in answered.items()
        if view.status not in _USABLE or view.not_after <= ctx.now
    ]
    if dead:
        await ctx.deps.store.release_requests(ctx.conn, dead)
    return {r: view for r, view in answered.items() if r not in dead}


async def check_slots(
    ctx: CaContext, commands: Sequence[IssueCertificate]
) -> Mapping[tuple[str, str], SlotHolder]:
    """Lock the slots these enrollments fill until commit, and refuse any that may
    not fill its slot (ca_worker.slots), before anything is signed; what each holds."""
    if not commands:
        return {}
    if twice := repeated_slots(commands):
        device, slot = twice[0]
        raise SlotContended(f"slot {slot!r} of device {device!r} is asked for twice")
    holders = await ctx.deps.slots.lock_slots(
        ctx.conn, [slot_key(cmd) for cmd in commands]
    )
    for cmd in commands:
        if reason := slot_refusal(cmd, holders.get(slot_key(cmd)), ctx.now):
            raise SlotRefused(reason)
    return holders


async def fill_slots(
    ctx: CaContext,
    commands: Sequence[IssueCertificate],
    stored: Sequence[CertificateView | None],
) -> None:
    """Each new certificate is now its slot's (a twin's None changes nothing)."""
    filled = [
        (cmd.device_id, cmd.slot, view.serial)
        for cmd, view in zip(commands, stored, strict=True)
        if view is not None
    ]
    if filled:
        await ctx.deps.slots.fill_slots(ctx.conn, filled)


def superseded(
    commands: Sequence[IssueCertificate],
    stored: Sequence[CertificateView | None],
    holders: Mapping[tuple[str, str], SlotHolder],
    now: datetime,
) -> dict[str, str]:
    """The live certificates new ones replaced in their slots, where the DMS revokes
    on renewal: superseded serial to the request that replaced it."""
    targets: dict[str, str] = {}
    for cmd, view in zip(commands, stored, strict=True):
        holder = holders.get(slot_key(cmd))
        if view is None or not cmd.revoke_replaced or holder is None:
            continue
        if holder.live(now):
            targets[holder.serial] = cmd.request_id
    return targets
