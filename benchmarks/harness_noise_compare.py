"""Is the noise of measured observations worse in one harness variant than another? Paired over runs.

    .venv/bin/python benchmarks/harness_noise_compare.py --before B1.log B2.log … --after A1.log A2.log …

Each log is the output of `benchmarks/harness_overhead.py` (its "CV per operation and cores" line), one run of
each variant interleaved with the other on the same quiet machine. One run's median CV moves by several points
between runs of the same code, so single runs cannot tell; this prints each run's median CV, the CV median
pooled over runs, and a Wilcoxon signed-rank test over the comparisons (each comparison's CV averaged over the
runs of a variant, paired across variants): a small p with "after" higher means the noise got worse.
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

from scipy.stats import wilcoxon

CV_LINE = "CV per operation and cores:"


def cvs(log: Path) -> dict[str, float]:
    """{"suite.operation@cores": CV %} from a harness log."""
    line = next((text for text in log.read_text().splitlines() if text.startswith(CV_LINE)), None)
    if line is None:
        raise SystemExit(f"{log}: no '{CV_LINE}' line (did the harness run finish?)")
    return {key: float(value) for key, value in re.findall(r"(\S+@\d+) ([\d.]+)%", line)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", nargs="+", type=Path, required=True)
    parser.add_argument("--after", nargs="+", type=Path, required=True)
    args = parser.parse_args()
    sides = {"before": [cvs(p) for p in args.before], "after": [cvs(p) for p in args.after]}
    keys = sorted(set.intersection(*(set(run) for runs in sides.values() for run in runs)))
    for suite in [*sorted({key.split(".")[0] for key in keys}), ""]:
        chosen = [key for key in keys if key.startswith(suite)]
        means = {side: [statistics.mean(run[key] for run in runs) for key in chosen] for side, runs in sides.items()}
        per_run = {side: ", ".join(f"{statistics.median(run[k] for k in chosen):.1f}" for run in runs)
                   for side, runs in sides.items()}
        pooled = {side: statistics.median(run[k] for run in runs for k in chosen) for side, runs in sides.items()}
        worse = sum(a > b for a, b in zip(means["after"], means["before"], strict=True))
        p = wilcoxon(means["after"], means["before"]).pvalue
        print(f"{suite or 'all':10}  median CV per run: before {per_run['before']}; after {per_run['after']}\n"
              f"{'':10}  pooled median CV: before {pooled['before']:.1f} %, after {pooled['after']:.1f} %; "
              f"after noisier in {worse} of {len(chosen)} comparisons, Wilcoxon p = {p:.2f}")


if __name__ == "__main__":
    main()
