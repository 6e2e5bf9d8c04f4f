"""The application's crons, registered by the scheduler at start (one row per name across all nodes)."""

from __future__ import annotations

from backend import Crons

crons = Crons()
crons.cron("nightly-horizon", "0 3 * * *", "classes:extend_horizons", {}, timezone="Europe/London")
