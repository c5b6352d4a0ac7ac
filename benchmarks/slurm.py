"""daskweak on Slurm against plain dask-jobqueue, on the development cluster (slurm/dev-cluster/up).

    eval "$(slurm/dev-cluster/up)" && .venv/bin/python benchmarks/slurm.py [--repeats 5]
    eval "$(slurm/dev-cluster/up --nodes 3 --accounting)" && \
        slurm/dev-cluster/login .venv/bin/python benchmarks/slurm.py --multinode [--repeats 5]

1. Time from the scale request to all workers ready for a 2-job cluster: daskweak's backend (open_cluster)
   and plain `SLURMCluster(...).scale(jobs=2)` + `wait_for_workers`, alternating, medians (target ≤ 1.25×).
2. The harness overhead of the default sweep on Slurm (MAX_N_CORES=2, CORES_PER_NODE=1), as
   benchmarks/harness_overhead.py prints it (target ≤ 15%).

With --multinode, on the login node of the multi-node cluster: only 1., for 3 whole-node jobs of 1 core over
eth0 (SLURM_EXCLUSIVE, so one per host), logs on the shared directory, and the hosts the workers ran on.
"""

from __future__ import annotations

import argparse
import os
import socket
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
from daskweak.backends.polling import poll_until
from daskweak.backends.slurm.jobs import queued
from daskweak.plan import make_plan
from daskweak.settings import load_settings

# Jobs submitted within about a second of the previous jobs leaving the nodes start some 2 s later than on
# nodes idle longer (on the multi-node cluster, with plain sbatch too); each cluster of a pair starts after this
# pause, so neither pays for the other's release.
SETTLE = 3.0


def plain_jobqueue(out_dir: str, jobs: int, interface: str | None = None,
                   extra: list[str] | None = None) -> tuple[float, list[str]]:
    """Seconds from `scale` to `jobs` workers, and the hosts they run on. Like daskweak's `stop`, it returns once
    Slurm has let the jobs go (jobqueue's close only scancels them)."""
    with SLURMCluster(cores=1, processes=1, memory="2GB", account="daskweak", queue="debug",
                      walltime="00:10:00", log_directory=out_dir, interface=interface,
                      job_extra_directives=extra or [],
                      scheduler_options={"dashboard_address": ":0"}) as cluster, \
            Client(cluster) as client:
        start = time.perf_counter()
        cluster.scale(jobs=jobs)
        client.wait_for_workers(jobs, timeout=120)
        seconds, where = time.perf_counter() - start, hosts(client)
        job_ids = [str(job.job_id) for job in cluster.workers.values()]
    poll_until(lambda: not queued(job_ids), interval=0.2, deadline=time.monotonic() + 60)
    return seconds, where


def hosts(client: Client) -> list[str]:
    return sorted(client.run(socket.gethostname).values())


def time_to_ready(multinode: bool, repeats: int, tmp: str) -> None:
    """Alternating pairs, daskweak first; each pair as it comes, then the medians and their ratio."""
    jobs = 3 if multinode else 2
    options = {"net_interface": "eth0", "slurm_exclusive": True} if multinode else {}
    settings = load_settings(backend="slurm", account="daskweak", partition="debug", max_n_cores=jobs,
                             step_by=jobs, cores_per_node=1, res_dir=tmp, out_dir=f"{tmp}/out", **options)
    step = make_plan(settings)[-1]
    ours, plain = [], []
    for pair in range(1, repeats + 1):
        time.sleep(SETTLE)
        with open_cluster(settings, step) as deployment:
            ours.append(deployment.time_to_ready)
            our_hosts = hosts(deployment.client)
        time.sleep(SETTLE)
        seconds, plain_hosts = plain_jobqueue(f"{tmp}/out", jobs, "eth0" if multinode else None,
                                              ["--exclusive"] if multinode else None)
        plain.append(seconds)
        print(f"pair {pair}: daskweak {ours[-1]:5.2f} s on {', '.join(our_hosts)}; "
              f"dask-jobqueue {seconds:5.2f} s on {', '.join(plain_hosts)}", flush=True)
    print(f"time to {jobs} workers ready, daskweak      median {statistics.median(ours):6.2f} s  "
          f"{[round(t, 2) for t in ours]}")
    print(f"time to {jobs} workers ready, dask-jobqueue median {statistics.median(plain):6.2f} s  "
          f"{[round(t, 2) for t in plain]}")
    print(f"ratio {statistics.median(ours) / statistics.median(plain):.2f}  (target ≤ 1.25)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--multinode", action="store_true",
                        help="on the login node of `slurm/dev-cluster/up --nodes 3`: 3 jobs on 3 hosts over eth0")
    args = parser.parse_args()
    # The jobs' logs must be where the compute nodes can write them: the shared directory, not this host's /tmp.
    shared = os.environ["DASKWEAK_SLURM_SHARED"] if args.multinode else None
    with tempfile.TemporaryDirectory(dir=shared) as tmp:
        time_to_ready(args.multinode, args.repeats, tmp)
        if args.multinode:
            return
        print("harness overhead of the default sweep on Slurm (2 jobs of 1 core at the 2-core step):")
        report(load_settings(backend="slurm", account="daskweak", partition="debug", cores_per_node=1,
                             res_dir=tmp, out_dir=f"{tmp}/out"))


if __name__ == "__main__":
    main()
