"""Files a run leaves in RES_DIR: the origin's per-suite aggregate CSVs and the raw observation rows."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from daskweak.analysis.stats import aggregate
from daskweak.store import ResultStore


def export_run(
    store: ResultStore, run_id: str, directory: Path, prefix: str, raw: Literal["csv", "parquet"] = "csv"
) -> list[Path]:
    """`<prefix>_<suite>.csv` aggregates per suite, plus `<prefix>_<run>_observations.<csv|parquet>`."""
    rows = store.observations(run_id)
    if rows.empty:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    table = aggregate(rows)
    for suite, part in table.groupby("suite"):
        path = directory / f"{prefix}_{suite}.csv"
        part.drop(columns="suite").to_csv(path, index=False)
        written.append(path)
    raw_path = directory / f"{prefix}_{run_id}_observations.{raw}"
    if raw == "parquet":
        rows.to_parquet(raw_path, index=False)
    else:
        rows.to_csv(raw_path, index=False)
    written.append(raw_path)
    return written
