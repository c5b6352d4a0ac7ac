"""daskweak on Kubernetes against a bare dask-kubernetes KubeCluster, on the same API server and operator.

    eval "$(../shared/k8s-local/up)" && .venv/bin/python benchmarks/kubernetes.py [--repeats 3]
    .venv/bin/python benchmarks/kubernetes.py --podman [--pairs 5]      # as root; switches the rig itself

Default (the rig as it is, process pods): for each step of a 1 → 2 worker-pod sweep, the time from the request
to all workers connected, for daskweak's backend (`open_cluster`: DaskCluster over kr8s, address, connect,
wait, version check) and for `KubeCluster(custom_cluster_spec=make_cluster_spec(..., n_workers=N))` +
`wait_for_workers(N)`, alternating, medians (target ≤ 1.25×). Both use a LoadBalancer service and the
`dask worker` command; tear-down is timed apart, since daskweak waits until the DaskCluster is gone and
KubeCluster.close() does not.

--podman: the same comparison for one shape, 2 worker pods of 1 core, with the pods running the worker image
(docker/build-images: built or loaded) on k8s-local's podman runtime with 3 nodes. The rig is switched to it
under its exclusive lock and put back afterwards (tests/podman_rig.py). Pairs alternate which side goes first;
each start waits until the previous cluster's pods are gone. Printed: the rig, the image size, each side's
time to ready per pair, the median ratio, and pod start times (pod first seen → its container running, seen by
polling the API every 0.1 s). Same shape on both sides: scheduler and workers with a 1-CPU limit, commands
`dask scheduler` / `dask worker` of the image (it has no `dask-scheduler`), TCP (KubeCluster cannot manage a
TLS-only scheduler).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

from dask_kubernetes.operator import KubeCluster, make_cluster_spec
from distributed import Client
from distributed.versions import VersionMismatchWarning

from daskweak.backends.base import open_cluster
from daskweak.plan import make_plan
from daskweak.settings import load_settings

warnings.filterwarnings("ignore", message="Kubernetes version")
# --podman: the image's Python is Debian's 3.11.2, the client's another 3.11 patch release; distributed warns with a
# table on every connect, daskweak's own check compares major.minor and fails the step on a real mismatch
warnings.filterwarnings("ignore", category=VersionMismatchWarning)
ROOT = Path(__file__).resolve().parents[1]


def bare_spec(workers: int, image: str, scheduler_memory: str | None) -> dict:
    """make_cluster_spec's DaskCluster; with scheduler_memory (--podman) the shape of daskweak's: 1-CPU limits,
    the scheduler's memory limit, and `dask scheduler` (the image has the `dask` CLI only; k8s-local's process
    pods get a `dask-scheduler` shim)."""
    spec = make_cluster_spec(name=f"bare-{uuid.uuid4().hex[:6]}", n_workers=workers, image=image,
                             scheduler_service_type="LoadBalancer", worker_command="dask worker",
                             resources={"limits": {"cpu": "1"}} if scheduler_memory else None)
    if scheduler_memory:
        [scheduler] = spec["spec"]["scheduler"]["spec"]["containers"]
        scheduler["args"] = ["dask", "scheduler", *scheduler["args"][1:]]
        scheduler["resources"] = {"limits": {"cpu": "1", "memory": scheduler_memory}}
    return spec


def bare(namespace: str, workers: int, image: str = "daskweak:bench",
         scheduler_memory: str | None = None) -> tuple[float, float]:
    spec = bare_spec(workers, image, scheduler_memory)
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


class PodStarts:
    """Polls the namespace's pods: for each, the time from first seen to its container seen running."""

    def __init__(self, namespace: str, interval: float = 0.1) -> None:
        self.namespace, self.interval = namespace, interval
        self.seen: dict[str, float] = {}
        self.running: dict[str, tuple[str, float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self) -> None:
        import kr8s

        api = kr8s.api()  # kr8s keeps one client per thread
        while not self.stop.is_set():
            now = time.perf_counter()
            for pod in api.get("pods", namespace=self.namespace):
                uid = pod.metadata.uid
                self.seen.setdefault(uid, now)
                states = [s.get("state", {}) for s in pod.status.get("containerStatuses") or []]
                if uid not in self.running and states and all("running" in s for s in states):
                    role = pod.metadata.labels.get("dask.org/component", "?")
                    self.running[uid] = (role, now - self.seen[uid])
            self.stop.wait(self.interval)

    def __enter__(self) -> PodStarts:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def gone(self, timeout: float = 120) -> None:
        """Wait until the namespace has no pods left (the next start must not share the rig with them)."""
        import kr8s

        deadline = time.monotonic() + timeout
        while list(kr8s.api().get("pods", namespace=self.namespace)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"pods of {self.namespace} still there after {timeout:g}s")
            time.sleep(self.interval)


def describe_rig(image: str, size: int) -> str:
    import dask_kubernetes
    import kr8s

    api = kr8s.api()
    nodes = [node.name for node in api.get("nodes")]
    version = api.version()
    podman = subprocess.run(["podman", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"rig: k8s-local on one {os.cpu_count()}-core {platform.machine()} VM: real kube-apiserver "
            f"{version.get('gitVersion')}, etcd, controller-manager, Dask operator (dask-kubernetes "
            f"{dask_kubernetes.__version__}); stand-in kubelet/scheduler with {len(nodes)} nodes {nodes}; pods run "
            f"by {podman} (runc, cgroupfs, host network)\n"
            f"image: {image}, {size / 2**20:.0f} MiB (podman image inspect)")


def podman_mode(pairs: int) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.podman_rig import build_image, image_size, podman_rig

    image = build_image()
    size = image_size(image)
    with podman_rig():
        os.environ["KUBECONFIG"] = os.environ.get("K8S_LOCAL_STATE", "/tmp/k8s-local") + "/kubeconfig"
        print(describe_rig(image, size), flush=True)
        namespace = f"dw-bench-{uuid.uuid4().hex[:6]}"
        subprocess.run(["kubectl", "create", "namespace", namespace], check=True, capture_output=True)
        try:
            settings = load_settings(backend="kubernetes", kube_namespace=namespace, container_image=image,
                                     kube_service_type="LoadBalancer", max_n_cores=2, cores_per_node=1,
                                     scheduler_cores=1, timeout=120, res_dir="/tmp/dw-bench")
            step = make_plan(settings)[-1]
            assert step.workers == 2, step
            scheduler_memory = f"{settings.scheduler_mem_bytes // 2**20}Mi"  # as daskweak's scheduler pod
            ready: dict[str, list[float]] = {"daskweak": [], "KubeCluster": []}
            starts: dict[str, list[tuple[str, float]]] = {"daskweak": [], "KubeCluster": []}
            runs = {"daskweak": lambda: ours(settings, step),
                    "KubeCluster": lambda: bare(namespace, 2, image, scheduler_memory)}
            with PodStarts(namespace) as pods:
                for pair in range(pairs):
                    order = ["daskweak", "KubeCluster"] if pair % 2 == 0 else ["KubeCluster", "daskweak"]
                    for name in order:
                        pods.gone()
                        before = set(pods.running)
                        ready[name].append(runs[name]()[0])
                        starts[name] += [pods.running[uid] for uid in pods.running if uid not in before]
                    print(f"pair {pair + 1}: daskweak {ready['daskweak'][-1]:5.2f} s, KubeCluster "
                          f"{ready['KubeCluster'][-1]:5.2f} s (first: {order[0]})", flush=True)
                pods.gone()
            medians = {name: statistics.median(times) for name, times in ready.items()}
            for name, times in ready.items():
                by_role = {role: [t for r, t in starts[name] if r == role] for role in ("scheduler", "worker")}
                pod_start = ", ".join(f"{role} median {statistics.median(t):.2f} s (n={len(t)})"
                                      for role, t in by_role.items() if t)
                print(f"2 worker pods, {name:11s}: time to ready median {medians[name]:5.2f} s "
                      f"{[round(t, 2) for t in times]}; pod start (seen → running): {pod_start}")
            print(f"ratio daskweak / KubeCluster (medians): {medians['daskweak'] / medians['KubeCluster']:.2f} "
                  f"(target ≤ 1.25), {pairs} pairs")
        finally:
            subprocess.run(["kubectl", "delete", "namespace", namespace, "--wait=false"], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--podman", action="store_true", help="the worker image on the podman runtime, 3 nodes")
    parser.add_argument("--pairs", type=int, default=5, help="--podman: alternating pairs (at least 5)")
    args = parser.parse_args()
    if args.podman:
        podman_mode(max(args.pairs, 5))
        return
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
