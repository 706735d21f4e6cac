"""Number and time formatting shared by the template (static/dashboard.js mirrors these for refreshes)."""

from __future__ import annotations

import time

from zeek_pipeline.health.verdict import duration

__all__ = ["clock", "duration", "number", "size"]


def number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def size(value: float | int | None) -> str:
    if value is None:
        return "–"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"


def clock(value: float | None) -> str:
    """HH:MM:SS in UTC: the pipeline's logs are in UTC too."""
    if value is None:
        return "–"
    try:
        return time.strftime("%H:%M:%S", time.gmtime(value))
    except (OverflowError, OSError, ValueError):
        return "–"
