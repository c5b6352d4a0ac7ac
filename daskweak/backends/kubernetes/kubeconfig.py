"""A kubeconfig file from a loaded `kubernetes.client.Configuration` (what the Airflow provider's hook yields).

The step runs in a child process that talks to the API through kr8s, so the credentials an Airflow
Connection describes (a path, an inline kubeconfig, in-cluster) are handed over as one self-contained
kubeconfig, written 0600 in a private directory and removed afterwards.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def exported(configuration: Any) -> Iterator[Path]:
    """KUBECONFIG points at these credentials inside the block (child processes inherit it), then is restored."""
    previous = os.environ.get("KUBECONFIG")
    with tempfile.TemporaryDirectory(prefix="daskweak-kube-") as directory:
        path = Path(directory) / "config"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(from_configuration(configuration), out)
        os.environ["KUBECONFIG"] = str(path)
        try:
            yield path
        finally:
            if previous is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = previous
