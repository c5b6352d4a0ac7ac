"""Figures with matplotlib, saved as inline SVG: the efficiency heatmap, small multiples per suite, peak memory,
time to ready, and the trend over nights.

Small multiples (one small axis per operation, a figure per suite) keep 25 operations on one screen; the core
axis is log₂ from 8 cores on, where linear spacing would crowd the small counts. Rates are drawn in human
units (GB/s, Mrows/s, ktasks/s), with the ideal line n·rate(1) as the 2017 Dask scaling study drew it.
"""

from __future__ import annotations

import io
import math

import matplotlib
import matplotlib.dates

matplotlib.use("Agg")  # files only; no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, NullLocator

from daskweak.analysis import units

COLUMNS = 4  # small axes per row


def _grid(count: int, width: float = 3.1, height: float = 2.3) -> tuple[plt.Figure, list[plt.Axes]]:
    rows = max(1, math.ceil(count / COLUMNS))
    columns = min(COLUMNS, max(1, count))
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows + 0.5), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _margins(fig: plt.Figure) -> None:
    """Fixed margins for a grid of small axes: tight_layout would measure every tick label (most of the time)."""
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.8 / height, top=1 - 0.6 / height, wspace=0.3, hspace=0.9)


def core_axis(ax: plt.Axes, cores: list[int]) -> None:
    """Ticks at the measured core counts; log₂ spacing once the sweep reaches 8 cores."""
    if max(cores, default=1) >= 8:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(cores))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(c) for c in cores])


def heatmap(table: pd.DataFrame) -> plt.Figure:
    """Efficiency per operation (rows) and core count (columns), each value written in its cell.

    Only values whose interval is narrow enough are coloured; a noisy one (`table["noisy"]`) is hatched grey and
    its text ends in "?". Above 100 % the scale does not clip to "perfect": such cells take the colour beyond
    the bar's end (blue), and read "superlinear" when their whole interval is above 1."""
    wide = table.pivot_table(index=["suite", "operation"], columns="cores_requested", values="efficiency")
    noisy = table.pivot_table(index=["suite", "operation"], columns="cores_requested", values="noisy",
                              aggfunc="max").reindex_like(wide).fillna(True).to_numpy(dtype=bool)
    low = table.pivot_table(index=["suite", "operation"], columns="cores_requested",
                            values="efficiency_low").reindex_like(wide).to_numpy(dtype=float)
    values = wide.to_numpy(dtype=float)
    cmap = plt.get_cmap("RdYlGn").with_extremes(over="#2563eb", bad="#e5e7eb")
    fig, ax = plt.subplots(figsize=(2.0 + 0.55 * max(2, wide.shape[1]) + 0.8, 0.9 + 0.2 * len(wide)))
    image = ax.imshow(np.where(noisy, np.nan, values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(wide.shape[1]), [str(c) for c in wide.columns])
    ax.set_yticks(range(len(wide)), [f"{suite}.{operation}" for suite, operation in wide.index], fontsize=7)
    ax.set_xlabel("cores")
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    for (row, column), value in np.ndenumerate(values):
        if np.isnan(value):
            continue
        if noisy[row, column]:
            ax.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#9ca3af",
                                   linewidth=0))
            text, colour = f"{value:.0%}?", "#4b5563"
        else:
            above = value > 1 and low[row, column] > 1
            text = f"{value:.0%}" + (" superlinear" if above else "")
            colour = "white" if value < 0.25 or value > 0.9 else "black"
        ax.text(column, row, text, ha="center", va="center", fontsize=6 if len(text) > 5 else 7, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03, extend="max",
                 label="efficiency (blue: above 100 %)")
    ax.set_title("hatched, '?': noisy (95 % interval too wide), not a result", fontsize=7, pad=18)
    fig.tight_layout()
    return fig


def suite_figure(summary: pd.DataFrame, suite: str, labels: dict[str, str]) -> plt.Figure:
    """Rate against cores, one small axis per operation of `suite`, one colour per run (`labels` → legend),
    with confidence intervals and each run's ideal line n·rate(1)."""
    table = summary[summary["suite"] == suite]
    operations = sorted(table["operation"].unique())
    cores = sorted(int(c) for c in table["cores_requested"].unique())
    fig, axes = _grid(len(operations))
    for ax, operation in zip(axes, operations, strict=True):
        rows = table[table["operation"] == operation]
        unit = rows["rate_unit"].iloc[0]
        factor, label = units.axis_unit(list(rows["rate_per_core_ci_high"] * rows["cores_requested"]), unit)
        for index, (run_id, name) in enumerate(labels.items()):
            data = rows[rows["run_id"] == run_id].sort_values("cores_requested")
            if data.empty:
                continue
            n = data["cores_requested"].to_numpy()
            rate = data["rate_per_core"].to_numpy() * n / factor
            low = data["rate_per_core_ci_low"].to_numpy() * n / factor
            high = data["rate_per_core_ci_high"].to_numpy() * n / factor
            color = f"C{index}"
            ax.errorbar(n, rate, yerr=[np.clip(rate - low, 0, None), np.clip(high - rate, 0, None)], marker="o",
                        markersize=4, color=color, label=name, capsize=3)
            one = data[data["cores_requested"] == 1]
            if not one.empty:
                ideal = float(one["rate_per_core"].iloc[0]) * n / factor
                ax.plot(n, ideal, linestyle="--", color=color, alpha=0.5,
                        label=f"{name}: ideal" if len(labels) > 1 else "ideal (linear)")
        ax.set_title(f"{suite}.{operation}", fontsize=9)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
        core_axis(ax, cores)
        ax.grid(alpha=0.3)
    if axes:
        axes[0].legend(fontsize=7)
        for ax in axes[-COLUMNS:]:
            ax.set_xlabel("cores", fontsize=8)
    fig.suptitle(f"{suite}: rate against cores (95% CI, dashed: ideal)", fontsize=10)
    _margins(fig)
    return fig


def memory_figure(table: pd.DataFrame) -> plt.Figure:
    """Median peak cluster memory per operation (rows), one bar per core count."""
    wide = table.pivot_table(index=["suite", "operation"], columns="cores_requested", values="peak_memory")
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.3 * len(wide)))
    factor = 2.0 ** 20
    positions = np.arange(len(wide))
    height = 0.8 / max(1, wide.shape[1])
    for index, cores in enumerate(wide.columns):
        ax.barh(positions + index * height, wide[cores].to_numpy() / factor, height=height, label=f"{cores} cores")
    ax.set_yticks(positions + height * (wide.shape[1] - 1) / 2, [f"{s}.{o}" for s, o in wide.index], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("peak cluster memory (MiB, median over observations)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def ready_figure(steps: pd.DataFrame) -> plt.Figure:
    """Seconds from asking for the cluster to all its workers being there, per step."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(steps) + 2), 2.6))
    labels = [f"{int(c)} cores" for c in steps["cores_requested"]]
    ax.bar(labels, steps["time_to_ready"].fillna(0).to_numpy(dtype=float), color="C0")
    ax.set_ylabel("time to ready (s)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def trend_figure(trend: pd.DataFrame, suite: str, marks: pd.DataFrame,
                 changes: pd.DataFrame | None = None) -> plt.Figure:
    """Per operation of `suite`: the nightly median time (one line per core count) over the baseline band,
    regressions and suspects marked (red, orange; a ring where the operation pooled over its core counts was
    flagged, a dash-dotted vertical line where the night effect was), accepted changes as green dotted
    vertical lines, change points the baseline restarted at as violet dashed ones.

    `trend`: suite, operation, cores_requested, started_at, median, band_low, band_high.
    `marks`: suite, operation, cores_requested (or NaN: all), started_at, kind (regression, suspected,
    accepted, restarted).
    `changes`: suite, operation, cores_requested, started_at, shift_pct (`changepoints.trend_change_points`).
    """
    table = trend[trend["suite"] == suite]
    operations = sorted(table["operation"].unique())
    cores = sorted(int(c) for c in table["cores_requested"].unique())
    colours = {c: f"C{i}" for i, c in enumerate(cores)}
    fig, axes = _grid(len(operations), width=3.6, height=2.3)
    # Fixed date ticks: matplotlib's date locator would take much of the time.
    days = pd.to_datetime(table["started_at"])
    ticks = pd.date_range(days.min(), days.max(), periods=4) if len(days) else []
    mine = marks[marks["suite"].isna() | (marks["suite"] == suite)] if not marks.empty else marks
    # the night effect's verdicts concern every operation of the night: a vertical line on every panel
    nightly = marks[(marks["suite"] == "all") & (marks["operation"] == "night effect")] if not marks.empty \
        else marks
    for ax, (operation, rows) in zip(axes, table.groupby("operation", sort=True), strict=True):
        for n, line in rows.groupby("cores_requested", sort=True):
            colour = colours[int(n)]
            ax.fill_between(line["started_at"], line["band_low"], line["band_high"], color=colour, alpha=0.15,
                            linewidth=0)
            ax.plot(line["started_at"], line["median"], color=colour, linewidth=1, label=f"{int(n)} cores")
        if not mine.empty:
            here = mine[mine["operation"].isna() | (mine["operation"] == operation)]
            for kind, colour, marker in (("regression", "#b91c1c", "v"), ("suspected", "#d97706", "o")):
                points = here[here["kind"] == kind].merge(
                    rows[["cores_requested", "started_at", "median"]], on=["cores_requested", "started_at"])
                if not points.empty:
                    ax.scatter(points["started_at"], points["median"], color=colour, marker=marker, s=22, zorder=3,
                               label=kind)
                # the operation pooled over its core counts (cores 0, "all"): a ring on each core count's point
                pooled = here[(here["kind"] == kind) & (here["cores_requested"] == 0)].drop(
                    columns="cores_requested").merge(rows[["started_at", "median"]], on="started_at")
                if not pooled.empty:
                    ax.scatter(pooled["started_at"], pooled["median"], facecolors="none", edgecolors=colour,
                               marker="o", s=60, linewidths=1.2, zorder=3, label=f"{kind} (all cores)")
            for when in here.loc[here["kind"] == "accepted", "started_at"].unique():
                ax.axvline(when, color="#047857", linewidth=1, linestyle=":")
            for when in here.loc[here["kind"] == "restarted", "started_at"].unique():
                ax.axvline(when, color="#6d28d9", linewidth=1, linestyle="--")
        for kind, colour in (("regression", "#b91c1c"), ("suspected", "#d97706")):
            for when in nightly.loc[nightly["kind"] == kind, "started_at"].unique() if not nightly.empty else []:
                ax.axvline(when, color=colour, linewidth=1, linestyle="-.", alpha=0.7)
        if changes is not None and not changes.empty:
            steps = changes[(changes["suite"] == suite) & (changes["operation"] == operation)].merge(
                rows[["cores_requested", "started_at", "median"]], on=["cores_requested", "started_at"])
            for point in steps.itertuples():
                ax.scatter([point.started_at], [point.median], color=colours[int(point.cores_requested)],
                           marker="D", s=26, zorder=4, edgecolors="black", linewidths=0.5)
                low, high = point.shift_low, point.shift_high
                # a shift whose interval includes 0 (or that has none yet) is marked as noise, not a step
                sure = np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0)
                label = f"{point.shift_pct:+.0f} % " + (f"[{low:+.0f}, {high:+.0f}]" if np.isfinite(low) else "±?")
                ax.annotate(label if sure else f"{label} noisy", (point.started_at, point.median), fontsize=6,
                            textcoords="offset points", xytext=(3, 4))
        ax.set_title(f"{suite}.{operation}", fontsize=9)
        ax.set_ylabel("median s", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(FixedLocator(list(matplotlib.dates.date2num(ticks))))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%Y-%m-%d"))
        ax.tick_params(axis="x", labelrotation=20)
        ax.grid(alpha=0.3)
    if axes:
        axes[0].legend(fontsize=7)
    fig.suptitle(f"{suite}: median time per night (band: 95 % prediction interval of the verdict's baseline; "
                 "▼ regression, ● suspected, ◆ change point with its shift, dotted: accepted, dashed: restarted at "
                 "a change point)", fontsize=10)
    _margins(fig)
    return fig


def svg(fig: plt.Figure) -> str:
    """The figure as an inline SVG element (for a self-contained HTML page), then closed. Text stays text
    (searchable, smaller than glyph paths)."""
    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]
