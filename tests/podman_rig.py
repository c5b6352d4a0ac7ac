"""The worker image and the podman-runtime rig, for the image tests and benchmarks/kubernetes.py --podman.

- `build_image()`: docker/build-images — the image in podman's storage, built on a Debian bookworm base (Docker
  Hub cannot be pulled here) or loaded from its cache; returns its reference.
- `podman(*args)`: podman with the same settings (runc, cgroupfs, no default ulimits).
- `podman_rig()`: the shared k8s-local rig switched to K8S_LOCAL_RUNTIME=podman on 3 nodes while the block runs,
  under the EXCLUSIVE lock that every user of the rig takes (the process-runtime tests take it shared), and put
  back to its normal state (3 nodes, process runtime, pods on this project's venv) before the lock is released,
  whatever happens in the block.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "docker" / "build-images"
LOCK = Path("/tmp/daskweak-k8s-runtime.lock")
NODES = "3"


def k8s_local() -> Path:
    return Path(os.environ.get("K8S_LOCAL") or ROOT.parent / "shared" / "k8s-local")


def podman_env() -> dict[str, str]:
    """CONTAINERS_CONF as docker/build-images chooses it: the caller's, else the one it writes beside its cache."""
    cache = Path(os.environ.get("DASKWEAK_IMAGE_CACHE") or "/var/cache/daskweak/images")
    return os.environ | {"CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF") or str(cache.parent / "containers.conf")}


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {done.returncode}: {done.stderr[-2000:]}")
    return done


def build_image() -> str:
    """The worker image's reference; built (several minutes the first time) or taken from podman storage/cache."""
    done = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=1500)
    if done.returncode != 0:
        raise RuntimeError(f"docker/build-images failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout.strip().splitlines()[-1]


def image_size(image: str) -> int:
    """Bytes, as `podman image inspect` reports the image (uncompressed layers)."""
    return int(json.loads(podman("image", "inspect", image).stdout)[0]["Size"])


def up(runtime: str | None) -> None:
    """k8s-local/up with 3 nodes, pods on this project's venv (process) or their images (podman)."""
    env = os.environ | {"K8S_LOCAL_NODES": NODES, "K8S_LOCAL_POD_PATH": str(ROOT / ".venv" / "bin")}
    env.pop("K8S_LOCAL_RUNTIME", None)
    if runtime:
        env["K8S_LOCAL_RUNTIME"] = runtime
    for _ in range(2):  # up can take a daemon's fork, not yet exec'd, for a dead daemon once (see .ci/run)
        done = subprocess.run([str(k8s_local() / "up")], env=env, capture_output=True, text=True, timeout=900)
        if done.returncode == 0:
            return
    raise RuntimeError(f"k8s-local up with K8S_LOCAL_RUNTIME={runtime or 'process'} failed:\n{done.stderr[-3000:]}")


@contextmanager
def exclusive_lock(wait: float) -> Iterator[None]:
    """The rig's lock, exclusively: nobody else's pods run on the rig while its runtime is switched."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{LOCK} stayed locked for {wait:g}s (other users of the rig)") from None
                time.sleep(1)  # polling a lock held by another process: there is no event to wait for
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def podman_rig(wait: float = 1800) -> Iterator[None]:
    with exclusive_lock(wait):
        try:
            up("podman")
            yield
        finally:
            up(None)
