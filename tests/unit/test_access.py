"""Who may see and change what (studio/access.py): the rules every service applies."""

from __future__ import annotations

import pytest

from studio import access
from studio.errors import Forbidden
from studio.values import Principal, Role

ADMIN = Principal(name="root", role=Role.ADMIN)
ANA = Principal(name="ana", groups=frozenset({"nlp"}))
BO = Principal(name="bo", groups=frozenset({"vision"}))


@pytest.mark.parametrize(
    ("actor", "owner", "group", "allowed"),
    [
        (ANA, "ana", None, True),  # her own
        (ANA, "bo", "nlp", True),  # shared with her group
        (ANA, "bo", "vision", False),  # shared with a group she is not in
        (ANA, "bo", None, False),  # someone else's
        (ADMIN, "bo", None, True),  # admins change anything
    ],
)
def test_owners_their_groups_and_admins_may_change_an_object(
    actor: Principal, owner: str, group: str | None, allowed: bool
) -> None:
    assert access.may_change(actor, owner=owner, group=group) is allowed


def test_a_refusal_names_the_owner_and_the_group() -> None:
    with pytest.raises(Forbidden) as refused:
        access.check_owner(ANA, kind="deployment", name="chat", owner="bo", group="vision")
    assert refused.value.message == "deployment 'chat' is not yours: owned by bo (shared with group 'vision')"
    assert refused.value.hint == "ask its owner or an admin to change it"


def test_only_admins_pass_the_admin_check_and_members_are_told_who_they_are() -> None:
    access.check_admin(ADMIN, doing="register clusters")
    with pytest.raises(Forbidden) as refused:
        access.check_admin(ANA, doing="register clusters")
    assert (refused.value.message, refused.value.hint) == (
        "only an admin may register clusters",
        "you are 'ana', a member",
    )


def test_a_member_shares_only_with_a_group_of_theirs() -> None:
    access.check_group(ANA, None)
    access.check_group(ANA, "nlp")
    access.check_group(ADMIN, "anything")
    with pytest.raises(Forbidden, match="you are not in group 'vision'") as refused:
        access.check_group(ANA, "vision")
    assert refused.value.hint == "your groups: nlp"


@pytest.mark.parametrize(
    ("actor", "groups", "allowed"),
    [
        (ANA, [], True),  # a pool open to all
        (ANA, ["nlp", "ops"], True),
        (BO, ["nlp", "ops"], False),
        (ADMIN, ["nlp"], True),
    ],
)
def test_pools_with_groups_admit_their_members_and_admins(actor: Principal, groups: list[str], allowed: bool) -> None:
    assert access.may_use_pool(actor, groups) is allowed


def test_a_pool_refusal_says_which_groups_it_is_for() -> None:
    with pytest.raises(Forbidden) as refused:
        access.check_pool(BO, pool="a100", groups=["ops", "nlp"])
    assert refused.value.message == "pool 'a100' is for the groups nlp, ops; 'bo' is in none of them"
