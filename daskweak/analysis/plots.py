"""Scaling plots with matplotlib: per operation, rate against cores (with the ideal line) and efficiency.

One figure per suite, one row per operation: rate per second against cores on the left, with the ideal
n·rate(1) line as the 2017 Dask scaling study drew it, and efficiency against cores on the right. Several
runs share the axes (one colour each), which is how two configurations are compared.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only; no display

import matplotlib.pyplot as plt
import pandas as pd


def suite_figure(summary: pd.DataFrame, suite: str, labels: dict[str, str]) -> plt.Figure:
    """`summary` is `stats.summary` for one or more runs; `labels` names each run in the legend."""
    table = summary[summary["suite"] == suite]
    operations = sorted(table["operation"].unique())
    fig, axes = plt.subplots(len(operations), 2, figsize=(9, 2.6 * len(operations)), squeeze=False)
    for row, operation in zip(axes, operations, strict=True):
        rate_ax, eff_ax = row
        for index, (run_id, label) in enumerate(labels.items()):
            data = table[(table["operation"] == operation) & (table["run_id"] == run_id)].sort_values(
                "cores_requested")
            if data.empty:
                continue
            cores = data["cores_requested"].to_numpy()
            rate = data["rate_per_core"].to_numpy() * cores
            low = data["rate_per_core_ci_low"].to_numpy() * cores
            high = data["rate_per_core_ci_high"].to_numpy() * cores
            color = f"C{index}"
            rate_ax.errorbar(cores, rate, yerr=[rate - low, high - rate], marker="o", color=color, label=label,
                             capsize=3)
            one = data[data["cores_requested"] == 1]
            if not one.empty:
                ideal = float(one["rate_per_core"].iloc[0]) * cores
                rate_ax.plot(cores, ideal, linestyle="--", color=color, alpha=0.5,
                             label=f"{label}: ideal" if len(labels) > 1 else "ideal (linear)")
            eff_ax.plot(cores, data["efficiency"], marker="o", color=color, label=label)
        unit = table.loc[table["operation"] == operation, "rate_unit"].iloc[0]
        rate_ax.set(title=f"{suite}.{operation}: rate", xlabel="cores", ylabel=unit)
        eff_ax.set(title=f"{suite}.{operation}: efficiency", xlabel="cores", ylabel="efficiency",
                   ylim=(0, max(1.2, float(table["efficiency"].max(skipna=True) or 1) * 1.1)))
        eff_ax.axhline(1.0, linestyle="--", color="grey", alpha=0.6)
        for ax in row:
            ax.set_xticks(sorted(table["cores_requested"].unique()))
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def svg(fig: plt.Figure) -> str:
    """The figure as an inline SVG element (for a self-contained HTML page), then closed."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]
