"""The kubernetes.io/tls Secret SECRET_CERT_NAME, made from CERT_DIR's CA and scheduler certificate.

The client keeps its own certificate in CERT_DIR; scheduler and worker pods share the Secret's pair. All of
them are signed by the one CA, so each side trusts the other. The key material goes straight to the API:
it is never printed. Writing it is an admin's action: the benchmark's runtime Role (the Helm chart) only reads
this one Secret, since an account that may create Secrets can mint another account's token.
"""

from __future__ import annotations

import base64
from typing import Any

from daskweak.errors import ConfigError, Problem
from daskweak.settings import Settings
from daskweak.tls import ensure_certificates


def tls_secret(settings: Settings) -> dict[str, Any]:
    if not (settings.cert_dir and settings.secret_cert_name and settings.kube_namespace):
        raise ConfigError([Problem(key, None, "a value: required to create the TLS Secret")
                           for key in ("CERT_DIR", "SECRET_CERT_NAME", "KUBE_NAMESPACE")
                           if not getattr(settings, key.lower())])
    namespace = settings.kube_namespace
    paths = ensure_certificates(settings.cert_dir, hosts=[
        f"*.{namespace}.svc.cluster.local", f"*.{namespace}.svc", "localhost", "127.0.0.1"])
    files = {"ca.crt": paths["ca"][0], "tls.crt": paths["scheduler"][0], "tls.key": paths["scheduler"][1]}
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": settings.secret_cert_name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "daskweak"}},
        "data": {key: base64.b64encode(path.read_bytes()).decode() for key, path in files.items()},
    }


def apply_tls_secret(settings: Settings) -> str:
    """Create the Secret, or replace its data when it exists; returns `namespace/name`."""
    import kr8s
    from kr8s.objects import Secret

    from daskweak.backends.kubernetes.backend import KubernetesError, api

    manifest = tls_secret(settings)
    secret = Secret(manifest, api=api())
    try:
        if secret.exists():
            secret.patch({"data": manifest["data"]})
        else:
            secret.create()
    except kr8s.ServerError as exc:
        forbidden = exc.response is not None and exc.response.status_code == 403
        hint = (f"; writing it needs credentials that may create and patch Secrets in {settings.kube_namespace!r} "
                "(an admin's): the benchmark's ServiceAccount only reads it") if forbidden else ""
        raise KubernetesError(f"the API refused Secret {settings.secret_cert_name}: {exc}{hint}") from None
    return f"{manifest['metadata']['namespace']}/{manifest['metadata']['name']}"
