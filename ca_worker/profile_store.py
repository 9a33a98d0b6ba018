"""SQL of ``ca.profiles``: stored issuance profiles. Inline, on asyncpg; the caller's
connection and transaction, as in ``store``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from contracts.profiles import ProfileSpec, ProfileView

__all__ = ["ProfileStore"]


def _view(row: asyncpg.Record) -> ProfileView:
    return ProfileView.model_validate_json(row["spec"]).model_copy(
        update={"created_at": row["created_at"]}
    )


class ProfileStore:
    """Profiles by name; the built-in ones are not stored."""

    async def insert(
        self, conn: asyncpg.Connection, spec: ProfileSpec, now: datetime
    ) -> ProfileView | None:
        """Store a profile; None when the name is taken."""
        row = await conn.fetchrow(
            """INSERT INTO ca.profiles (name, spec, created_at) VALUES ($1, $2::text::jsonb, $3)
               ON CONFLICT (name) DO NOTHING RETURNING spec::text, created_at""",
            spec.name,
            ProfileSpec.model_validate(spec.model_dump()).model_dump_json(),
            now,
        )
        return None if row is None else _view(row)

    async def get(self, conn: asyncpg.Connection, name: str) -> ProfileView | None:
        row = await conn.fetchrow(
            "SELECT spec::text, created_at FROM ca.profiles WHERE name = $1", name
        )
        return None if row is None else _view(row)

    async def get_many(
        self, conn: asyncpg.Connection, names: Sequence[str]
    ) -> dict[str, ProfileView]:
        rows = await conn.fetch(
            "SELECT spec::text, created_at FROM ca.profiles WHERE name = ANY($1::text[])",
            list(names),
        )
        views = [_view(row) for row in rows]
        return {view.name: view for view in views}

    async def list_all(self, conn: asyncpg.Connection) -> list[ProfileView]:
        rows = await conn.fetch(
            "SELECT spec::text, created_at FROM ca.profiles ORDER BY name"
        )
        return [_view(row) for row in rows]
