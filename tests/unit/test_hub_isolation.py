"""Who may start a notebook server on Cove's own machine (``embedded_refusal``): the first admin, unless the operator
trusts every user as much; the refusal says why and what to do instead."""

from __future__ import annotations

from hub.spawner import embedded_refusal


def test_the_first_admin_may_and_others_are_told_why_not() -> None:
    assert embedded_refusal(user="admin", owner="admin", os_user="cove", trust_all_users=False) is None
    assert embedded_refusal(user="ada", owner="admin", os_user="cove", trust_all_users=False) == (
        "embedded notebooks run as Cove's OS user (cove) and could read its database; on one machine only admin may "
        "start one; use Kubernetes for a team (COVE_HUB_SPAWNER=kubernetes: each server a pod with only its own home "
        "volume)"
    )


def test_an_operator_who_trusts_every_user_lets_them_all() -> None:
    assert embedded_refusal(user="ada", owner="admin", os_user="cove", trust_all_users=True) is None
