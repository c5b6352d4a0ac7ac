"""USE_SSL on the local backend: generated CA and certificates, private keys 0600, plaintext refused."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from distributed import Client

from daskweak.backends.base import open_cluster
from daskweak.plan import make_plan
from daskweak.runner import run_sweep
from daskweak.store import ResultStore
from daskweak.tls import ensure_certificates
from tests.conftest import assert_tls_only


def test_certificates_are_signed_by_the_ca_and_keys_are_private(tmp_path):
    paths = ensure_certificates(tmp_path / "certs")
    ca = x509.load_pem_x509_certificate(paths["ca"][0].read_bytes())
    for role in ("scheduler", "worker", "client"):
        cert_path, key_path = paths[role]
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        cert.verify_directly_issued_by(ca)
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths["ca"][1].stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "certs").stat().st_mode) == 0o700


def test_existing_certificates_are_reused_and_a_loose_key_mode_is_repaired(tmp_path):
    first = ensure_certificates(tmp_path)
    before = first["worker"][0].read_bytes()
    first["worker"][1].chmod(0o644)
    first["ca"][1].chmod(0o644)
    again = ensure_certificates(tmp_path)
    assert again["worker"][0].read_bytes() == before
    assert stat.S_IMODE(again["worker"][1].stat().st_mode) == 0o600
    assert stat.S_IMODE(again["ca"][1].stat().st_mode) == 0o600


def test_certificates_that_do_not_name_the_dialled_address_are_issued_again_then_reused(tmp_path):
    ensure_certificates(tmp_path)  # made before the workers dialled 10.77.0.1
    wanted = ["localhost", "127.0.0.1", "10.77.0.1"]
    paths = ensure_certificates(tmp_path, hosts=wanted)
    cert = x509.load_pem_x509_certificate(paths["scheduler"][0].read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.77.0.1") in san.get_values_for_type(x509.IPAddress)
    issued = paths["scheduler"][0].read_bytes()
    assert ensure_certificates(tmp_path, hosts=wanted)["scheduler"][0].read_bytes() == issued
    assert ensure_certificates(tmp_path)["scheduler"][0].read_bytes() == issued  # no names asked: kept


def test_a_renewed_ca_gets_certificates_it_signed(tmp_path):
    ensure_certificates(tmp_path)
    (tmp_path / "ca.crt").unlink()  # a new CA under the same name: the old certificates no longer verify
    paths = ensure_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate(paths["ca"][0].read_bytes())
    for role in ("scheduler", "worker", "client"):
        x509.load_pem_x509_certificate(paths[role][0].read_bytes()).verify_directly_issued_by(ca)


def test_tls_cluster_measures_and_refuses_plaintext_clients(small, tmp_path):
    settings = small(use_ssl=True, cert_dir=str(tmp_path / "certs"), max_n_cores=1, suites="tasks",
                     obs_per_iter=1)
    [step] = make_plan(settings)
    with open_cluster(settings, step) as deployment:
        assert_tls_only(deployment)
        address = deployment.client.scheduler.address
        with pytest.raises((OSError, TimeoutError, TypeError, ValueError)):
            Client(address, timeout=3)  # TLS address, but no certificates: refused
    result = run_sweep(settings)
    store = ResultStore(settings.database_url)
    rows = store.observations(result.run_id)
    assert result.status == "ok" and rows["use_ssl"].all()
    assert store.runs().set_index("run_id").loc[result.run_id, "use_ssl"]


def test_a_mounted_kubernetes_tls_secret_is_used_as_it_is(tmp_path):
    """CERT_DIR holding ca.crt/tls.crt/tls.key (a Secret volume, read-only): no CA key needed, nothing written."""
    from daskweak.tls import security

    made = ensure_certificates(tmp_path / "made")
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    for name, source in (("ca.crt", made["ca"][0]), ("tls.crt", made["scheduler"][0]),
                         ("tls.key", made["scheduler"][1])):
        (mounted / name).write_bytes(source.read_bytes())
        (mounted / name).chmod(0o440)
    mounted.chmod(0o555)
    try:
        tls = security(mounted)
        assert tls.tls_client_cert == str(mounted / "tls.crt") and tls.require_encryption
        assert sorted(p.name for p in mounted.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    finally:
        mounted.chmod(0o755)
