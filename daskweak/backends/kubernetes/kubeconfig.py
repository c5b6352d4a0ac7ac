"""A kubeconfig file from a loaded `kubernetes.client.Configuration` (what the Airflow provider's hook yields).

The step runs in a child process that talks to the API through kr8s, so the credentials an Airflow
Connection describes (a path, an inline kubeconfig, in-cluster) are handed over as one self-contained
kubeconfig: `<temp dir>/daskweak-kube-<uid>/<hash of the run id>/<pid>.kubeconfig`, 0600 in 0700
directories. The block removes it; a process killed with SIGKILL cannot, so the run's last task removes
the run's directory (`remove_run`) and every later export first removes what dead processes left
(`remove_stale`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any


def _inline(path: str | None) -> str | None:
    return base64.b64encode(Path(path).read_bytes()).decode() if path else None


def from_configuration(configuration: Any) -> dict[str, Any]:
    """Server, CA, client certificate and token of `configuration`, with every file inlined."""
    cluster: dict[str, Any] = {"server": configuration.host}
    if not configuration.verify_ssl:
        cluster["insecure-skip-tls-verify"] = True
    elif configuration.ssl_ca_cert:
        cluster["certificate-authority-data"] = _inline(configuration.ssl_ca_cert)
    user: dict[str, Any] = {}
    if configuration.cert_file:
        user["client-certificate-data"] = _inline(configuration.cert_file)
        user["client-key-data"] = _inline(configuration.key_file)
    # kubernetes-client keeps the token under "BearerToken" (older releases: "authorization")
    token = configuration.get_api_key_with_prefix("BearerToken", alias="authorization") or ""
    scheme, _, value = token.partition(" ")
    if token:
        user["token"] = value if scheme.lower() == "bearer" else token
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "daskweak",
        "clusters": [{"name": "daskweak", "cluster": cluster}],
        "users": [{"name": "daskweak", "user": user}],
        "contexts": [{"name": "daskweak", "context": {"cluster": "daskweak", "user": "daskweak"}}],
    }


def _root() -> Path:
    return Path(tempfile.gettempdir()) / f"daskweak-kube-{os.getuid()}"


def private_root() -> Path:
    """The user's directory of exported kubeconfigs, created 0700; refused when someone else owns it."""
    root = _root()
    with suppress(FileExistsError):
        root.mkdir(mode=0o700)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"{root} is not a directory of this user: credentials are not written there")
    os.chmod(root, 0o700)
    return root


def run_directory(run_id: str) -> Path:
    """The run's private directory (named by a hash: Airflow run ids hold ':' and '+')."""
    return private_root() / hashlib.sha256(run_id.encode()).hexdigest()[:16]


def remove_run(run_id: str) -> None:
    """Remove every kubeconfig of the run: its last task calls this, when no step of it runs any more."""
    if not _root().exists():
        return
    shutil.rmtree(run_directory(run_id), ignore_errors=True)


def remove_stale() -> None:
    """Remove the kubeconfigs whose process is gone (SIGKILLed), and the run directories left empty."""
    if not _root().exists():
        return
    for directory in private_root().iterdir():
        for path in directory.glob("*.kubeconfig"):
            if not _alive(int(path.stem)):
                path.unlink(missing_ok=True)
        with suppress(OSError):  # not empty: a live process still holds credentials there
            directory.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: the pid is taken, treat it as alive
    return True


@contextmanager
def exported(configuration: Any, run_id: str) -> Iterator[Path]:
    """KUBECONFIG points at these credentials inside the block (child processes inherit it), then is restored."""
    remove_stale()
    directory = run_directory(run_id)
    path = directory / f"{os.getpid()}.kubeconfig"
    previous = os.environ.get("KUBECONFIG")
    try:
        while True:
            directory.mkdir(mode=0o700, exist_ok=True)
            path.unlink(missing_ok=True)  # left by a dead process of this run whose pid came back
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileNotFoundError:
                continue  # another run's `remove_stale` took the empty directory meanwhile
        with os.fdopen(fd, "w") as out:
            json.dump(from_configuration(configuration), out)
        os.environ["KUBECONFIG"] = str(path)
        yield path
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        path.unlink(missing_ok=True)
        with suppress(OSError):  # not empty: another task of the run still holds its own
            directory.rmdir()
