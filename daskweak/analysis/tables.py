"""Rich tables shared by the CLI and the Airflow tasks' logs."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from daskweak.analysis.intervals import MIN_FOR_INTERVAL


def efficiency_cell(row: Any) -> str:
    """`0.123 87% [81–94]` (at 1 core `0.123 T(1) ±4%`); a noisy value is marked and never stands alone as a
    result."""
    low, high = row.efficiency_low, row.efficiency_high
    if row.cores_requested == 1:  # the reference: its efficiency is 1 by definition, its noise the median's
        spread = f"±{row.precision:.0%}" if np.isfinite(row.precision) else "no interval"
        text = f"{row.median:.3f} T(1) {spread}"
    else:
        interval = f"[{low:.0%}–{high:.0%}]" if pd.notna(low) and pd.notna(high) else "[no interval]"
        text = f"{row.median:.3f} {row.efficiency:.0%} {interval}"
    return f"[dim]{text} noisy[/dim]" if row.noisy else text


def efficiency_table(table: pd.DataFrame, scaling: str) -> Table:
    """Median seconds and efficiency with its 95 % interval per operation (rows) and core count (columns)."""
    cores = sorted(int(n) for n in table["cores_requested"].unique())
    out = Table(title=f"median seconds, efficiency ({scaling} scaling) [95 % interval]")
    out.add_column("suite")
    out.add_column("operation")
    for n in cores:
        out.add_column(f"{n} core{'s' * (n > 1)}", justify="right")
    for (suite, operation), group in table.groupby(["suite", "operation"], sort=False):
        cells = {row.cores_requested: efficiency_cell(row) for row in group.itertuples()}
        out.add_row(suite, operation, *(cells.get(n, "—") for n in cores))
    return out


def noise_note(table: pd.DataFrame, noise_limit: float) -> str | None:
    """What the end of a run says when values are noisy: how many, and what makes them precise."""
    noisy = int(table["noisy"].sum())
    if not noisy:
        return None
    few = int((table["count"] < MIN_FOR_INTERVAL).sum())
    why = f" ({few} with fewer than {MIN_FOR_INTERVAL} observations, which cannot bound a median)" if few else ""
    return (f"{noisy} of {len(table)} values are noisy: their 95 % interval is missing or wider than "
            f"±{noise_limit:.0%}{why}. They are not results. `daskweak calibrate` measures this deployment's noise "
            "and recommends observation counts; a larger problem size, more observations (OBS_PER_ITER, or "
            "TARGET_PRECISION with a larger budget) or a quieter host narrow them.")


def as_text(renderable: object, width: int = 160) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None).print(renderable)
    return buffer.getvalue()
