"""daskweak on Kubernetes against a bare dask-kubernetes KubeCluster, on the same API server and operator.

    eval "$(../shared/k8s-local/up)" && .venv/bin/python benchmarks/kubernetes.py [--repeats 3]

For each step of a 1 → 2 worker-pod sweep: the time from the request to all workers connected, for
daskweak's backend (`open_cluster`: DaskCluster over kr8s, address, connect, wait, version check) and for
`KubeCluster(custom_cluster_spec=make_cluster_spec(..., n_workers=N))` + `wait_for_workers(N)`, alternating,
medians (target ≤ 1.25×). Both use a LoadBalancer service and the `dask worker` command; tear-down is timed
apart, since daskweak waits until the DaskCluster is gone and KubeCluster.close() does not.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import uuid
import warnings

from dask_kubernetes.operator import KubeCluster, make_cluster_spec
from distributed import Client

from daskweak.backends.base import open_cluster
from daskweak.plan import make_plan
from daskweak.settings import load_settings

warnings.filterwarnings("ignore", message="Kubernetes version")


def bare(namespace: str, workers: int) -> tuple[float, float]:
    spec = make_cluster_spec(name=f"bare-{uuid.uuid4().hex[:6]}", n_workers=workers, image="daskweak:bench",
                             scheduler_service_type="LoadBalancer", worker_command="dask worker")
    start = time.perf_counter()
    cluster = KubeCluster(custom_cluster_spec=spec, namespace=namespace, quiet=True, resource_timeout=120)
    with Client(cluster) as client:
        client.wait_for_workers(workers, timeout=120)
        ready = time.perf_counter() - start
    start = time.perf_counter()
    cluster.close()
    return ready, time.perf_counter() - start


def ours(settings, step) -> tuple[float, float]:
    with open_cluster(settings, step, f"bench-{uuid.uuid4().hex[:6]}") as deployment:
        ready = deployment.time_to_ready
        start = time.perf_counter()
    return ready, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    namespace = f"dw-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["kubectl", "create", "namespace", namespace], check=True, capture_output=True)
    try:
        settings = load_settings(backend="kubernetes", kube_namespace=namespace, container_image="daskweak:bench",
                                 kube_service_type="LoadBalancer", max_n_cores=2, res_dir="/tmp/dw-bench")
        for step in make_plan(settings):
            times: dict[str, list[tuple[float, float]]] = {"daskweak": [], "KubeCluster": []}
            for _ in range(args.repeats):
                times["daskweak"].append(ours(settings, step))
                times["KubeCluster"].append(bare(namespace, step.workers))
            medians = {name: statistics.median(t[0] for t in runs) for name, runs in times.items()}
            for name, runs in times.items():
                print(f"{step.workers} worker pod(s), {name:11s}: ready median {medians[name]:5.2f} s "
                      f"{[round(t[0], 2) for t in runs]}, tear-down median "
                      f"{statistics.median(t[1] for t in runs):5.2f} s")
            print(f"{step.workers} worker pod(s): ratio {medians['daskweak'] / medians['KubeCluster']:.2f} "
                  "(target ≤ 1.25)")
    finally:
        subprocess.run(["kubectl", "delete", "namespace", namespace, "--wait=false"], capture_output=True)


if __name__ == "__main__":
    main()
