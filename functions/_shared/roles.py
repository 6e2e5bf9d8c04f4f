"""Role sets used in ``roles=``: staff run the studio, instructors may also read rosters and members."""

from __future__ import annotations

__all__ = ["ROLES", "STAFF", "STAFF_AND_INSTRUCTORS"]

ROLES = ("owner", "admin", "instructor", "customer")
STAFF = ("owner", "admin")
STAFF_AND_INSTRUCTORS = ("owner", "admin", "instructor")
