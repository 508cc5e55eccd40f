"""Who may see and change what: the rules every service applies to the acting principal.

An object (a model, a deployment, an API key, a notebook) has an owner (a user's name) and optionally a group.
Admins may do anything. A member sees and changes what they own and what their groups own, reads the shared catalog
(models, images, pools), and uses a pool open to all or to one of their groups. A refusal names the owner.

Pure: the services call these with what they read, so the UI, the CLI and any later API cannot diverge.
"""

from __future__ import annotations

from collections.abc import Iterable

from studio.errors import Forbidden, InvalidSpec
from studio.values import Principal


def may_change(actor: Principal, *, owner: str, group: str | None) -> bool:
    return actor.is_admin or owner == actor.name or (group is not None and group in actor.groups)


def check_owner(actor: Principal, *, kind: str, name: str, owner: str, group: str | None) -> None:
    """Forbidden, naming the owner, unless ``actor`` may change this object."""
    if not may_change(actor, owner=owner, group=group):
        shared = f" (shared with group {group!r})" if group else ""
        raise Forbidden(
            f"{kind} {name!r} is not yours: owned by {owner}{shared}", hint="ask its owner or an admin to change it"
        )


def check_admin(actor: Principal, *, doing: str) -> None:
    if not actor.is_admin:
        raise Forbidden(f"only an admin may {doing}", hint=f"you are {actor.name!r}, a {actor.role.value}")


def check_group(actor: Principal, group: str | None) -> None:
    """A member may share an object only with a group they belong to."""
    if group is not None and not actor.is_admin and group not in actor.groups:
        mine = ", ".join(sorted(actor.groups)) or "none"
        raise Forbidden(f"you are not in group {group!r}", hint=f"your groups: {mine}")


def may_use_pool(actor: Principal, groups: Iterable[str]) -> bool:
    allowed = set(groups)
    return actor.is_admin or not allowed or bool(allowed & actor.groups)


def check_pool(actor: Principal, *, pool: str, groups: Iterable[str]) -> None:
    allowed = sorted(set(groups))
    if not may_use_pool(actor, allowed):
        raise Forbidden(
            f"pool {pool!r} is for the groups {', '.join(allowed)}; {actor.name!r} is in none of them",
            hint="pick another pool, or ask an admin to add you to one of its groups",
        )


# ------------------------------------------------------------------------------------------------ API scopes

# What a personal access token may do through the API: ``NOUN:read`` or ``NOUN:write`` (which includes read), or
# ``*`` for everything its owner may do. A key without scopes is for the gateway only.
SCOPE_NOUNS = (
    "models",
    "images",
    "pools",
    "clusters",
    "deployments",
    "keys",
    "usage",
    "users",
    "notebooks",
    "events",
    "datasets",
    "finetunes",
    "evaluations",
    "benchmarks",
)
SCOPES = ("*", *(f"{noun}:{verb}" for noun in SCOPE_NOUNS for verb in ("read", "write")))


def grants(scopes: Iterable[str] | None, needed: str) -> bool:
    """Whether ``scopes`` (a token's; None: a gateway-only key) allow ``needed`` (``NOUN:read|write``)."""
    if scopes is None:
        return False
    held = set(scopes)
    noun, _, verb = needed.partition(":")
    return "*" in held or needed in held or (verb == "read" and f"{noun}:write" in held)


def check_scope(scopes: Iterable[str] | None, needed: str, *, token: str) -> None:
    """Forbidden, naming the scope, unless the token ``token`` holds ``needed``."""
    if not grants(scopes, needed):
        if scopes is None:
            raise Forbidden(
                f"API key {token!r} is for the gateway only: it has no API scopes",
                hint=f"create a token with the scope {needed!r} (cove token create NAME --scope {needed})",
            )
        held = ", ".join(sorted(scopes)) or "none"
        raise Forbidden(
            f"token {token!r} lacks the scope {needed!r} (it has: {held})",
            hint=f"create a token with the scope {needed!r}",
        )


def check_scopes_known(scopes: Iterable[str]) -> list[str]:
    """The scopes, sorted and unique; InvalidSpec naming any that Cove does not know."""
    given = sorted(set(scopes))
    unknown = [s for s in given if s not in SCOPES]
    if unknown:
        raise InvalidSpec(
            f"unknown scope{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}",
            hint="scopes are '*' or NOUN:read / NOUN:write with NOUN one of " + ", ".join(SCOPE_NOUNS),
        )
    return given
