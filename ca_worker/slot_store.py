"""SQL of ``ca.slots``: the certificate each device slot holds now. Inline, on asyncpg;
the caller's connection and transaction, as in ``store``."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from ca_worker.slots import SlotHolder
from contracts.ca import CertificateStatus

__all__ = ["SlotStore"]


class SlotStore:
    """Locks, reads and moves slots, named for their intent."""

    async def lock_slots(
        self, conn: asyncpg.Connection, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], SlotHolder]:
        """Hold each slot until the transaction ends (a concurrent enrollment of the
        same slot waits, then sees this one's certificate); what each holds now."""
        devices = [device for device, _ in keys]
        slots = [slot for _, slot in keys]
        # In one order, so that two batches sharing slots never deadlock.
        await conn.execute(
            """SELECT pg_advisory_xact_lock(h) FROM (
                   SELECT DISTINCT hashtext('slot:' || d || ':' || s) AS h
                   FROM unnest($1::text[], $2::text[]) AS k(d, s) ORDER BY h) AS o""",
            devices,
            slots,
        )
        rows = await conn.fetch(
            """SELECT s.device_id, s.slot, c.serial, c.status, c.not_after
               FROM unnest($1::text[], $2::text[]) AS k(d, s)
               JOIN ca.slots AS s ON s.device_id = k.d AND s.slot = k.s
               JOIN ca.certificates AS c ON c.serial = s.serial""",
            devices,
            slots,
        )
        return {
            (row["device_id"], row["slot"]): SlotHolder(
                row["serial"], CertificateStatus(row["status"]), row["not_after"]
            )
            for row in rows
        }

    async def fill_slots(
        self, conn: asyncpg.Connection, filled: Sequence[tuple[str, str, str]]
    ) -> None:
        """(device, slot, serial): each slot now holds that certificate."""
        await conn.execute(
            """INSERT INTO ca.slots (device_id, slot, serial)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
               ON CONFLICT (device_id, slot) DO UPDATE SET serial = EXCLUDED.serial""",
            [device for device, _, _ in filled],
            [slot for _, slot, _ in filled],
            [serial for _, _, serial in filled],
        )
