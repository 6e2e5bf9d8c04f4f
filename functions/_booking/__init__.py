"""Booking rules that need the database: eligibility, credits, the waitlist, penalties and notifications.

The public functions in ``functions/bookings.py`` and ``functions/credits.py`` validate and authorise; the
modules here hold the rules, each a plain async function over a mutation or query ``ctx``.
"""
