"""CI's phases on this machine, timed: `bash .ci/run` in a fresh clone, as CI runs it (target: under 40 minutes
of the 90 CI allows, on the 2-core machine).

    .venv/bin/python benchmarks/ci_phases.py [--under /tmp] [--keep] [--rev HEAD]

Clones the checkout's commit REV into a new directory under UNDER (default /tmp: CI's clone may be there, and
the multi-node Slurm must cope), with a copy of ../shared beside it as CI has, runs `.ci/run` with CI=true and
prints each phase's wall time (packages, rigs and each rig, tests, lint), the total, the tests' closing line
and the 25 slowest tests. Caches stay as CI has them between runs (/var/cache/k8s-local,
/var/cache/daskweak/images, uv's cache); the first run on a new machine pays for them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MINUTES = 40


def clone(rev: str, under: Path) -> Path:
    base = Path(tempfile.mkdtemp(prefix="daskweak-ci-", dir=under))
    subprocess.run(["git", "clone", "-q", str(ROOT), str(base / "main")], check=True)
    subprocess.run(["git", "-C", str(base / "main"), "checkout", "-q", rev], check=True)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        shutil.copytree(shared, base / "shared", symlinks=True)
    return base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--under", type=Path, default=Path("/tmp"), help="where the clone goes (default /tmp)")
    parser.add_argument("--rev", default="HEAD", help="the commit to run (default HEAD)")
    parser.add_argument("--keep", action="store_true", help="keep the clone and its log afterwards")
    args = parser.parse_args()
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", args.rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    base = clone(rev, args.under)
    times, log = base / "times", base / "ci.log"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "VIRTUAL_ENV")}
    env |= {"CI": "true", "DASKWEAK_CI_TIMES": str(times)}
    print(f"ci_phases: bash .ci/run at {rev[:10]} in {base / 'main'} (log: {log})", flush=True)
    began = time.monotonic()
    with open(log, "w") as out:
        done = subprocess.run(["bash", ".ci/run"], cwd=base / "main", env=env, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    wall = time.monotonic() - began
    text = log.read_text(errors="replace")
    print(f"\n{'phase':<22}{'seconds':>9}")
    for line in times.read_text().splitlines() if times.exists() else []:
        name, seconds = re.match(r"\.ci/run: (.+?)\s+(\d+) s$", line).groups()
        print(f"{name:<22}{int(seconds):>9}")
    print(f"{'wall (this script)':<22}{wall:>9.0f}   budget {BUDGET_MINUTES * 60} s: "
          f"{'within' if wall <= BUDGET_MINUTES * 60 else 'OVER'}")
    closing = [line for line in text.splitlines() if re.fullmatch(r"\d+ passed, \d+ failed, \d+ skipped", line)]
    print(f"tests: {closing[-1] if closing else 'no closing line (see the log)'}; .ci/run exit {done.returncode}")
    slowest = text.split("slowest tests of both passes\n", 1)
    if len(slowest) == 2:
        print("\nthe 25 slowest tests:\n" + "\n".join(slowest[1].splitlines()[:25]))
    if not args.keep and done.returncode == 0:
        shutil.rmtree(base, ignore_errors=True)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
