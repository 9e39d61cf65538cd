from __future__ import annotations

from pathlib import Path

import pytest

from engine.auth.permissions import PERMISSIONS, Role, can, markdown_table, require
from engine.errors import Forbidden

pytestmark = pytest.mark.unit


def test_roles_are_ordered() -> None:
    assert can("agent", "conversation.reply") and not can("agent", "conversation.read_all")
    assert can("supervisor", "conversation.assign") and not can("supervisor", "users.manage")
    assert can("admin", "channels.manage") and not can("admin", "tenant.manage")
    assert all(can("owner", action) for action in PERMISSIONS)
    for role in Role:  # what a lower role may, every higher one may too
        higher = [r for r in Role if list(Role).index(r) <= list(Role).index(role)]
        for action in PERMISSIONS:
            if can(role, action):
                assert all(can(h, action) for h in higher), (role, action)


def test_unknown_roles_and_actions_are_refused() -> None:
    assert not can("root", "conversation.reply")
    assert not can("owner", "conversation.delete_everything")
    assert not can("", "")
    with pytest.raises(Forbidden, match="agent"):
        require("agent", "users.manage")
    require("admin", "users.manage")


def test_the_readme_shows_the_table_from_code() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert markdown_table() in readme
