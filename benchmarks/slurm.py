"""daskweak on Slurm against plain dask-jobqueue, on the development cluster (slurm/dev-cluster/up).

    eval "$(slurm/dev-cluster/up)" && .venv/bin/python benchmarks/slurm.py [--repeats 5]

1. Time from the scale request to all workers ready for a 2-job cluster: daskweak's backend (open_cluster)
   and plain `SLURMCluster(...).scale(jobs=2)` + `wait_for_workers`, alternating, medians (target ≤ 1.25×).
2. The harness overhead of the default sweep on Slurm (MAX_N_CORES=2, CORES_PER_NODE=1), as
   benchmarks/harness_overhead.py prints it (target ≤ 15%).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dask_jobqueue import SLURMCluster
from distributed import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness_overhead import report

from daskweak.backends.base import open_cluster
from daskweak.plan import make_plan
from daskweak.settings import load_settings


def plain_jobqueue(out_dir: str) -> float:
    with SLURMCluster(cores=1, processes=1, memory="2GB", account="daskweak", queue="debug",
                      walltime="00:10:00", log_directory=out_dir,
                      scheduler_options={"dashboard_address": ":0"}) as cluster, Client(cluster) as client:
        start = time.perf_counter()
        cluster.scale(jobs=2)
        client.wait_for_workers(2, timeout=120)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(backend="slurm", account="daskweak", partition="debug", max_n_cores=2,
                                 step_by=2, cores_per_node=1, res_dir=tmp, out_dir=f"{tmp}/out")
        step = make_plan(settings)[-1]
        ours, plain = [], []
        for _ in range(args.repeats):
            with open_cluster(settings, step) as deployment:
                ours.append(deployment.time_to_ready)
            plain.append(plain_jobqueue(f"{tmp}/out"))
        print(f"time to 2 workers ready, daskweak      median {statistics.median(ours):6.2f} s  "
              f"{[round(t, 2) for t in ours]}")
        print(f"time to 2 workers ready, dask-jobqueue median {statistics.median(plain):6.2f} s  "
              f"{[round(t, 2) for t in plain]}")
        print(f"ratio {statistics.median(ours) / statistics.median(plain):.2f}  (target ≤ 1.25)")
        print("harness overhead of the default sweep on Slurm (2 jobs of 1 core at the 2-core step):")
        report(load_settings(backend="slurm", account="daskweak", partition="debug", cores_per_node=1,
                             res_dir=tmp, out_dir=f"{tmp}/out"))


if __name__ == "__main__":
    main()
