"""The application's crons, registered by the scheduler at start (one row per name across all nodes)."""

from __future__ import annotations

from backend import Crons

crons = Crons()
crons.cron("nightly-horizon", "0 3 * * *", "classes:extend_horizons", {}, timezone="Europe/London")
crons.interval("mark-no-shows", "bookings:mark_no_shows_due", {}, seconds=300)
crons.interval("deliver-webhooks", "webhooks:deliver", {}, seconds=10)
