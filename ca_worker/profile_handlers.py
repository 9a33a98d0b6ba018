"""Handlers of issuance profiles (``profile.create``, ``profile.get``,
``profile.list``) and the profile lookup issuance uses; the routes are in ``handlers``.
"""

from __future__ import annotations

from collections.abc import Iterable

from ca_worker.context import CaContext
from ca_worker.errors import ProfileExists, ProfileNotFound
from contracts.profiles import (
    BUILT_IN_PROFILES,
    DEFAULT_PROFILE,
    CreateProfile,
    GetProfile,
    ListProfiles,
    Profiles,
    ProfileSpec,
    ProfileView,
)
from runtime.routes import Outcome

__all__ = ["create_profile", "get_profile", "list_profiles", "profiles_named"]


async def create_profile(cmd: CreateProfile, ctx: CaContext) -> Outcome:
    if cmd.name in BUILT_IN_PROFILES:
        raise ProfileExists(cmd.name)
    spec = ProfileSpec.model_validate(cmd.model_dump())
    view = await ctx.deps.profiles.insert(ctx.conn, spec, ctx.now)
    if view is None:
        raise ProfileExists(cmd.name)
    return Outcome(view)


async def get_profile(query: GetProfile, ctx: CaContext) -> Outcome:
    return Outcome((await profiles_named(ctx, [query.name]))[query.name])


async def list_profiles(_query: ListProfiles, ctx: CaContext) -> Outcome:
    stored = await ctx.deps.profiles.list_all(ctx.conn)
    return Outcome(Profiles(items=[*BUILT_IN_PROFILES.values(), *stored]))


async def profiles_named(
    ctx: CaContext, names: Iterable[str | None]
) -> dict[str | None, ProfileView]:
    """Each profile by name (None: the default), built in or stored; a name that is
    neither is ``ProfileNotFound``."""
    wanted = {name or DEFAULT_PROFILE for name in names}
    found: dict[str, ProfileView] = {
        name: BUILT_IN_PROFILES[name] for name in wanted if name in BUILT_IN_PROFILES
    }
    if stored := wanted - set(found):
        found |= await ctx.deps.profiles.get_many(ctx.conn, sorted(stored))
    if missing := sorted(wanted - set(found)):
        raise ProfileNotFound(missing[0])
    resolved: dict[str | None, ProfileView] = {None: BUILT_IN_PROFILES[DEFAULT_PROFILE]}
    resolved.update(found.items())
    return resolved
