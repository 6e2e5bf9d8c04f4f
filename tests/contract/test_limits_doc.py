"""docs/limits.md is the one list of the engine's limits: every knob in backend/knobs.py appears there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_knob_is_documented_in_limits_md() -> None:
    knobs = set(re.findall(r'"(BACKEND_[A-Z0-9_]+)"', (ROOT / "backend" / "knobs.py").read_text()))
    documented = set(re.findall(r"`(BACKEND_[A-Z0-9_]+)`", (ROOT / "docs" / "limits.md").read_text()))
    assert knobs, "no knobs found: the pattern no longer matches backend/knobs.py"
    assert not knobs - documented, f"add these knobs to docs/limits.md: {sorted(knobs - documented)}"
    assert not documented - knobs, f"docs/limits.md names knobs that do not exist: {sorted(documented - knobs)}"
