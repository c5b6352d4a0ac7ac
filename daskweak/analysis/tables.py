"""Rich tables shared by the CLI and the Airflow tasks' logs."""

from __future__ import annotations

import io

import pandas as pd
from rich.console import Console
from rich.table import Table


def efficiency_table(table: pd.DataFrame, scaling: str) -> Table:
    """Median seconds and efficiency per operation (rows) and core count (columns)."""
    cores = sorted(int(n) for n in table["cores_requested"].unique())
    out = Table(title=f"median seconds (efficiency, {scaling} scaling)")
    out.add_column("suite")
    out.add_column("operation")
    for n in cores:
        out.add_column(f"{n} core{'s' * (n > 1)}", justify="right")
    for (suite, operation), group in table.groupby(["suite", "operation"], sort=False):
        cells = dict(zip(group["cores_requested"], zip(group["median"], group["efficiency"], strict=True),
                         strict=True))
        out.add_row(suite, operation, *(
            f"{cells[n][0]:.3f} ({cells[n][1]:.0%})" if n in cells else "—" for n in cores
        ))
    return out


def as_text(renderable: object, width: int = 160) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None).print(renderable)
    return buffer.getvalue()
