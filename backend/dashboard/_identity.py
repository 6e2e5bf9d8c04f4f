"""Who the dashboard acts as: the admin itself, or a member the admin acts for, always audited as the admin.

``AdminIdentity`` is built only here, from an admin already let in by ``_access``; token verification never
produces one, and tokens whose subject starts with ``admin:`` are refused (``auth._identity``), so an audit
row's ``admin:<name>`` actor can only come from the dashboard.
"""

from __future__ import annotations

import re

from ..auth import UserIdentity
from ..auth._identity import RESERVED_SUBJECT_PREFIX
from ..errors import InvalidArgs

__all__ = ["ADMIN_ISSUER", "AdminIdentity", "admin_identity", "clean_admin_name"]

ADMIN_ISSUER = "tidewater-dashboard"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class AdminIdentity(UserIdentity, frozen=True, kw_only=True):
    """An identity for a dashboard call; ``actor`` (``admin:<name>``) is what the audit trail records."""

    actor: str


def clean_admin_name(name: str | None) -> str:
    name = (name or "admin").strip() or "admin"
    if not _NAME.match(name):
        raise InvalidArgs("admin name: 1-64 letters, digits or . _ @ -")
    return name


def admin_identity(admin: str, as_subject: str | None = None) -> AdminIdentity:
    """The admin itself (subject ``admin:<name>``), or acting as the member with subject ``as_subject``."""
    actor = RESERVED_SUBJECT_PREFIX + admin
    subject = as_subject or actor
    if as_subject is not None and (not as_subject.strip() or as_subject.lstrip().casefold().startswith(RESERVED_SUBJECT_PREFIX)):
        raise InvalidArgs("$.identity.subject: a member's subject, not empty and not an admin")
    return AdminIdentity(
        subject=subject, issuer=ADMIN_ISSUER, token_identifier=f"{ADMIN_ISSUER}|{actor}|{subject}",
        name=None if as_subject else admin, actor=actor,
    )
