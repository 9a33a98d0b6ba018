"""SQL of schema ``devices``: inline, on asyncpg, each method taking the caller's
connection so the caller owns the transaction. Rows come back as ``Device`` records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from contracts.ca import CertificateStatus
from contracts.devices import DeviceStatus, DeviceView, SlotView
from device_worker.status import SlotCertificate, SlotState, derive_status

__all__ = ["SCHEMA", "Device", "Store"]

SCHEMA = "devices"


@dataclass(frozen=True, slots=True)
class Device:
    """A device as the worker keeps it: its row plus the state of every slot."""

    id: str
    dms: str | None
    status: DeviceStatus
    created_at: datetime
    decommissioned_at: datetime | None
    slots: tuple[SlotState, ...]

    def view(self) -> DeviceView:
        return DeviceView(
            id=self.id,
            dms=self.dms,
            status=self.status,
            slots=[_slot_view(s) for s in sorted(self.slots, key=lambda s: s.name)],
            created_at=self.created_at,
            decommissioned_at=self.decommissioned_at,
        )


def _slot_view(slot: SlotState) -> SlotView:
    certificate = slot.certificate
    if certificate is None:
        return SlotView(name=slot.name)
    return SlotView(
        name=slot.name,
        certificate_serial=certificate.serial,
        certificate_status=certificate.status,
        not_after=certificate.not_after,
    )


def _slot(row: asyncpg.Record) -> SlotState:
    if row["serial"] is None:
        return SlotState(row["name"])
    return SlotState(
        row["name"],
        SlotCertificate(
            serial=row["serial"],
            status=CertificateStatus(row["certificate_status"]),
            not_before=row["not_before"],
            not_after=row["not_after"],
            replaces=row["replaces"],
        ),
    )


def _device(row: asyncpg.Record, slots: Iterable[SlotState]) -> Device:
    return Device(
        id=row["id"],
        dms=row["dms"],
        status=DeviceStatus(row["status"]),
        created_at=row["created_at"],
        decommissioned_at=row["decommissioned_at"],
        slots=tuple(slots),
    )


_DEVICE_COLUMNS = "id, dms, status, created_at, decommissioned_at"
_SLOT_COLUMNS = (
    "device_id, name, serial, certificate_status, not_before, not_after, replaces"
)


class Store:
    """Every query of the device worker, named for its intent."""

    async def get_device(
        self, conn: asyncpg.Connection, device_id: str, *, lock: bool = False
    ) -> Device | None:
        row = await conn.fetchrow(
            f"SELECT {_DEVICE_COLUMNS} FROM devices.devices WHERE id = $1"
            + (" FOR UPDATE" if lock else ""),
            device_id,
        )
        if row is None:
            return None
        slots = await conn.fetch(
            f"SELECT {_SLOT_COLUMNS} FROM devices.slots WHERE device_id = $1 ORDER BY name",
            device_id,
        )
        return _device(row, (_slot(s) for s in slots))

    async def list_devices(
        self,
        conn: asyncpg.Connection,
        *,
        status: DeviceStatus | None,
        limit: int,
        after: str | None,
    ) -> list[Device]:
        rows = await conn.fetch(
            f"""SELECT {_DEVICE_COLUMNS} FROM devices.devices
                WHERE ($1::text IS NULL OR status = $1)
                  AND ($2::text IS NULL OR id > $2)
                ORDER BY id LIMIT $3""",
            None if status is None else status.value,
            after,
            limit,
        )
        return await self._with_slots(conn, rows)

    async def insert_device(
        self,
        conn: asyncpg.Connection,
        *,
        device_id: str,
        dms: str | None,
        slots: Sequence[str],
        now: datetime,
    ) -> Device | None:
        """Add a device with empty slots; None when the id is taken already.

        A concurrent insert of the same id makes this wait for that transaction.
        """
        states = tuple(SlotState(name) for name in slots)
        row = await conn.fetchrow(
            f"""INSERT INTO devices.devices (id, dms, status, created_at)
                VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING
                RETURNING {_DEVICE_COLUMNS}""",
            device_id,
            dms,
            derive_status(states, decommissioned=False).value,
            now,
        )
        if row is None:
            return None
        await self._save_slots(conn, [(device_id, state) for state in states])
        return _device(row, states)

    async def get_or_create_devices(
        self,
        conn: asyncpg.Connection,
        wanted: Mapping[str, str | None],
        now: datetime,
    ) -> dict[str, tuple[Device, bool]]:
        """The devices of ``wanted`` (id: DMS to create it with), locked for this
        transaction, each with whether it was created now. Created and locked in id
        order, so that two batches never wait on each other."""
        ids = sorted(wanted)
        pending = derive_status((), decommissioned=False).value
        created = await conn.fetch(
            f"""INSERT INTO devices.devices (id, dms, status, created_at)
                SELECT id, dms, $3, $4 FROM unnest($1::text[], $2::text[]) AS n(id, dms)
                ORDER BY id
                ON CONFLICT (id) DO NOTHING
                RETURNING {_DEVICE_COLUMNS}""",
            ids,
            [wanted[i] for i in ids],
            pending,
            now,
        )
        found = {row["id"]: (_device(row, ()), True) for row in created}
        existing = [i for i in ids if i not in found]
        if existing:
            rows = await conn.fetch(
                f"""SELECT {_DEVICE_COLUMNS} FROM devices.devices
                    WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE""",
                existing,
            )
            for device in await self._with_slots(conn, rows):
                found[device.id] = (device, False)
        if len(found) < len(
            ids
        ):  # devices are never deleted: the conflicting row is there
            raise LookupError(f"devices {set(ids) - set(found)} vanished while created")
        return found

    async def devices_holding(
        self, conn: asyncpg.Connection, serials: Sequence[str]
    ) -> dict[str, Device]:
        """The devices, locked for this transaction, whose slots hold these serials,
        by serial. Locked in id order, so two batches never wait on each other."""
        rows = await conn.fetch(
            f"""SELECT {_DEVICE_COLUMNS} FROM devices.devices
                WHERE id IN (SELECT device_id FROM devices.slots
                             WHERE serial = ANY($1::text[]))
                ORDER BY id FOR UPDATE""",
            list(serials),
        )
        return {
            state.certificate.serial: device
            for device in await self._with_slots(conn, rows)
            for state in device.slots
            if state.certificate is not None
        }

    async def save_devices(
        self, conn: asyncpg.Connection, changes: Sequence[tuple[Device, Device]]
    ) -> None:
        """Write what changed from each (before, after) pair: its slots, its status."""
        await self._save_slots(
            conn,
            [
                (after.id, state)
                for before, after in changes
                for state in set(after.slots) - set(before.slots)
            ],
        )
        statuses = [
            (after.id, after.status.value)
            for before, after in changes
            if after.status != before.status
        ]
        if statuses:
            await conn.execute(
                """UPDATE devices.devices AS d SET status = s.status
                   FROM unnest($1::text[], $2::text[]) AS s(id, status)
                   WHERE d.id = s.id""",
                [device_id for device_id, _ in statuses],
                [status for _, status in statuses],
            )

    async def _with_slots(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]
    ) -> list[Device]:
        """The devices of ``rows`` with their slots, read with one statement."""
        slots: dict[str, list[SlotState]] = {r["id"]: [] for r in rows}
        for s in await conn.fetch(
            f"""SELECT {_SLOT_COLUMNS} FROM devices.slots
                WHERE device_id = ANY($1::text[]) ORDER BY device_id, name""",
            list(slots),
        ):
            slots[s["device_id"]].append(_slot(s))
        return [_device(r, slots[r["id"]]) for r in rows]

    async def _save_slots(
        self, conn: asyncpg.Connection, slots: Sequence[tuple[str, SlotState]]
    ) -> None:
        """Insert or overwrite slots, each of its device id (one multi-row statement)."""
        if not slots:
            return
        await conn.executemany(
            """INSERT INTO devices.slots (device_id, name, serial, certificate_status,
                    not_before, not_after, replaces)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (device_id, name) DO UPDATE SET
                    serial = EXCLUDED.serial,
                    certificate_status = EXCLUDED.certificate_status,
                    not_before = EXCLUDED.not_before,
                    not_after = EXCLUDED.not_after,
                    replaces = EXCLUDED.replaces""",
            [
                (device_id, s.name, None, None, None, None, None)
                if s.certificate is None
                else (
                    device_id,
                    s.name,
                    s.certificate.serial,
                    s.certificate.status.value,
                    s.certificate.not_before,
                    s.certificate.not_after,
                    s.certificate.replaces,
                )
                for device_id, s in slots
            ],
        )

    async def mark_decommissioned(
        self, conn: asyncpg.Connection, device_id: str, now: datetime
    ) -> None:
        await conn.execute(
            "UPDATE devices.devices SET status = $2, decommissioned_at = $3 WHERE id = $1",
            device_id,
            DeviceStatus.DECOMMISSIONED.value,
            now,
        )

    async def record_dms(
        self, conn: asyncpg.Connection, name: str, status: str
    ) -> None:
        """Keep the projection of DMSs (``dms.create`` and ``dms.update``)."""
        await conn.execute(
            """INSERT INTO devices.dmss (name, status) VALUES ($1, $2)
               ON CONFLICT (name) DO UPDATE SET status = EXCLUDED.status""",
            name,
            status,
        )

    async def dms_status(self, conn: asyncpg.Connection, name: str) -> str | None:
        """The status of a DMS as the projection knows it; None: no such DMS."""
        status: str | None = await conn.fetchval(
            "SELECT status FROM devices.dmss WHERE name = $1", name
        )
        return status

    async def set_dms(self, conn: asyncpg.Connection, device_id: str, dms: str) -> None:
        """A device was transferred to another DMS."""
        await conn.execute(
            "UPDATE devices.devices SET dms = $2 WHERE id = $1", device_id, dms
        )
