"""Airflow's cost on top of the benchmark: the same configuration through `daskweak run` and through
`airflow dags test dask_weak_scaling`, both timed end to end.

    .venv/bin/python benchmarks/orchestration_overhead.py [KEY=VALUE ...]

Prints both wall times, the difference and the ratio (target: ≤ 1.3× or ≤ 20 s extra). Airflow's home is
created and migrated first, outside the timing, as it is once per installation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        env_file = base / "bench.env"
        env_file.write_text("".join(f"{item}\n" for item in sys.argv[1:]) + f"RES_DIR={base / 'results'}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
            "AIRFLOW_HOME": str(base / "airflow"), "DASKWEAK_ENV_FILE": str(env_file)}
        subprocess.run([ROOT / "bin" / "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
        cli = timed([str(ROOT / "bin" / "daskweak"), "--env-file", str(env_file), "run"], env, base)
        dag = timed([str(ROOT / "bin" / "airflow"), "dags", "test", "dask_weak_scaling"], env, base)
    print(f"daskweak run                         {cli:7.1f} s")
    print(f"airflow dags test dask_weak_scaling  {dag:7.1f} s")
    print(f"extra                                {dag - cli:+7.1f} s   ratio {dag / cli:.2f}× "
          f"(target ≤ 1.3× or ≤ 20 s extra)")


if __name__ == "__main__":
    main()
