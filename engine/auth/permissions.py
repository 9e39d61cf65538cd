"""What each role may do: one table, read by the API and rendered into the README.

Agents see the conversations of their teams and their own; supervisors see all of the tenant's
and manage assignment; admins also manage users, teams, channels, templates, the knowledge base
and AI settings; the owner also manages the tenant itself.
"""

from __future__ import annotations

from enum import StrEnum

from engine.errors import Forbidden


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    AGENT = "agent"


# action → (description, the lowest role allowed); roles are ordered agent < supervisor < admin < owner
PERMISSIONS: dict[str, tuple[str, Role]] = {
    "conversation.read_own": ("read conversations of one's teams and one's own", Role.AGENT),
    "conversation.reply": ("reply, react, send templates and media", Role.AGENT),
    "conversation.note": ("write internal notes and @mentions", Role.AGENT),
    "conversation.label": ("label conversations and change their status", Role.AGENT),
    "conversation.take": ("assign an unassigned conversation to oneself", Role.AGENT),
    "contact.read": ("read contacts and their history", Role.AGENT),
    "template.read": ("list and preview templates", Role.AGENT),
    "team_chat.use": ("use team chat", Role.AGENT),
    "conversation.read_all": ("read every conversation of the tenant", Role.SUPERVISOR),
    "conversation.assign": ("assign conversations to anyone, move them between teams", Role.SUPERVISOR),
    "contact.edit": ("edit contacts", Role.SUPERVISOR),
    "canned.manage": ("manage canned replies", Role.SUPERVISOR),
    "analytics.read": ("read analytics", Role.SUPERVISOR),
    "users.manage": ("invite, change and deactivate users (up to admin)", Role.ADMIN),
    "teams.manage": ("manage teams and their members", Role.ADMIN),
    "channels.manage": ("manage WhatsApp numbers", Role.ADMIN),
    "templates.manage": ("sync and manage templates", Role.ADMIN),
    "knowledge.manage": ("manage the knowledge base", Role.ADMIN),
    "ai.settings": ("change AI settings and see AI spend", Role.ADMIN),
    "audit.read": ("read the audit log", Role.ADMIN),
    "tenant.manage": ("rename the tenant, manage owners, close the account", Role.OWNER),
}

_RANK = {Role.AGENT: 0, Role.SUPERVISOR: 1, Role.ADMIN: 2, Role.OWNER: 3}


def can(role: str, action: str) -> bool:
    """Whether ``role`` may do ``action``. An unknown role or action is never allowed."""
    try:
        needed = PERMISSIONS[action][1]
        return _RANK[Role(role)] >= _RANK[needed]
    except (KeyError, ValueError):
        return False


def require(role: str, action: str) -> None:
    if not can(role, action):
        raise Forbidden(f"your role ({role}) may not {PERMISSIONS.get(action, (action,))[0]}")


def markdown_table() -> str:
    """The README's table, generated from PERMISSIONS so that the two never disagree."""
    roles = [Role.AGENT, Role.SUPERVISOR, Role.ADMIN, Role.OWNER]
    lines = ["| may … | " + " | ".join(r.value for r in roles) + " |", "|---|" + "---|" * len(roles)]
    for action, (description, _) in PERMISSIONS.items():
        marks = " | ".join("✓" if can(r, action) else "" for r in roles)
        lines.append(f"| {description} (`{action}`) | {marks} |")
    return "\n".join(lines)
