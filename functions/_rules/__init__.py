"""Pure business rules of the booking platform (no database, no engine imports)."""
