"""Rich tables shared by the CLI and the Airflow tasks' logs."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from daskweak.analysis import units
from daskweak.analysis.intervals import MIN_FOR_INTERVAL


def efficiency_cell(row: Any) -> str:
    """`units.efficiency`; a noisy value is dimmed and marked, never standing alone as a result."""
    text = escape(units.efficiency(row))  # "[81%–94%]" is not rich markup
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
