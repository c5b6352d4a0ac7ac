"""Human units for rates, sizes and times: "1.87 GB/s", "3.2 Mrows/s", "840 tasks/s", "2.4 GiB", "1.3 s".

Rates use decimal prefixes (a reader compares them with network and disk figures); memory uses dask's binary
`format_bytes` (as the dashboard shows worker memory).
"""

from __future__ import annotations

import math
from typing import Any

from dask.utils import format_bytes

PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))


def _unit(rate_unit: str) -> str:
    """"bytes/s" → "B/s"; "rows/s" and "tasks/s" stay as they are (with a space before a bare prefix)."""
    return "B/s" if rate_unit.startswith("bytes") else rate_unit


def prefix(value: float) -> tuple[float, str]:
    """The decimal prefix (factor, letter) that writes `value` with 1–3 digits before the point."""
    magnitude = abs(value) if value == value else 0.0
    for factor, letter in PREFIXES:
        if magnitude >= factor:
            return factor, letter
    return 1.0, ""


def efficiency(row: Any) -> str:
    """A row of `stats.summary` as text: `0.123 s · 87% [81%–94%]`; at 1 core, the reference, whose efficiency
    is 1 by definition and whose noise is its median's: `0.123 s · T(1) ±4%`."""
    if row.cores_requested == 1:
        spread = f"±{row.precision:.0%}" if math.isfinite(row.precision) else "no interval"
        return f"{row.median:.3f} s · T(1) {spread}"
    low, high = row.efficiency_low, row.efficiency_high
    interval = f"{low:.0%}–{high:.0%}" if math.isfinite(low) and math.isfinite(high) else "no interval"
    return f"{row.median:.3f} s · {row.efficiency:.0%} [{interval}]"


def rate(value: float | None, rate_unit: str) -> str:
    """A rate with its unit and a decimal prefix: 1.871e9 bytes/s → "1.87 GB/s", 3.2e6 rows/s → "3.2 Mrows/s"."""
    if value is None or not math.isfinite(value):
        return "—"
    factor, letter = prefix(value)
    return f"{value / factor:.3g} {letter}{_unit(rate_unit)}"


def axis_unit(values: list[float] | tuple[float, ...], rate_unit: str) -> tuple[float, str]:
    """One (factor, label) for a plot axis, chosen from its largest value, e.g. (1e9, "GB/s")."""
    finite = [v for v in values if v == v and math.isfinite(v)]
    factor, letter = prefix(max(finite, default=1.0))
    return factor, f"{letter}{_unit(rate_unit)}"


def memory(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return format_bytes(int(value))


def seconds(value: float | None) -> str:
    """A duration with the precision a reader wants: "0.123 s", "12.3 s", "4 min 05 s"."""
    if value is None or not math.isfinite(value):
        return "—"
    if value < 60:
        return f"{value:.3g} s"
    minutes, rest = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"
