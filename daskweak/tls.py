"""TLS material for USE_SSL: a private CA and scheduler, worker and client certificates in CERT_DIR.

The CA is kept between runs (a Kubernetes Secret or a shared file system may already carry it); the leaf
certificates are re-issued when missing, expiring within a day, or not signed by that CA. Private keys are
written with mode 0600, and the Security object requires encryption, so plaintext peers are refused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from distributed.security import Security

ROLES = ("scheduler", "worker", "client")
VALID_FOR = dt.timedelta(days=365)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "daskweak"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)  # an existing file keeps its old mode through os.open


def _load(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    if not (cert_path.is_file() and key_path.is_file()):
        return None
    key_path.chmod(0o600)  # a key copied in with a looser mode is tightened before use
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return cert, key  # type: ignore[return-value]


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=1)


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Issued by this CA's key, not only under its name: a renewed CA keeps the name "daskweak CA"."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _canonical(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(san.get_values_for_type(x509.DNSName)) | {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def _issue(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey,
    *, ca: bool, hosts: list[str],
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR * (10 if ca else 1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


def ensure_certificates(cert_dir: Path, hosts: list[str] | None = None) -> dict[str, tuple[Path, Path]]:
    """CA and per-role (certificate, key) paths in `cert_dir`, created or renewed as needed.

    With `hosts`, a certificate that does not name all of them is issued again (a CERT_DIR made on another
    host, or before the workers dialled another address); without, existing certificates serve as they are.
    """
    cert_dir.mkdir(parents=True, exist_ok=True)
    cert_dir.chmod(0o700)
    wanted = {_canonical(host) for host in hosts} if hosts else set()
    hosts = hosts or ["localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()]
    ca_paths = (cert_dir / "ca.crt", cert_dir / "ca.key")
    loaded = _load(*ca_paths)
    if loaded is None or not _fresh(loaded[0]):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _issue("daskweak CA", ca_key, _name("daskweak CA"), ca_key, ca=True, hosts=[])
        ca_paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        _write_key(ca_paths[1], ca_key)
    else:
        ca_cert, ca_key = loaded
    paths = {"ca": ca_paths}
    for role in ROLES:
        role_paths = (cert_dir / f"{role}.crt", cert_dir / f"{role}.key")
        current = _load(*role_paths)
        if (current is None or not _fresh(current[0]) or not _signed_by(current[0], ca_cert)
                or not wanted <= _names(current[0])):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _issue(f"dask-{role}", key, ca_cert.subject, ca_key, ca=False, hosts=hosts)
            role_paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            _write_key(role_paths[1], key)
        paths[role] = role_paths
    return paths


def mounted_secret(cert_dir: Path) -> dict[str, Path] | None:
    """A kubernetes.io/tls Secret mounted at CERT_DIR (ca.crt, tls.crt, tls.key; no CA key): used as it is.

    Its certificate serves client and server alike, so a client in the cluster (the chart's CronJob, an
    Airflow task pod) needs no CA key and writes nothing.
    """
    paths = {name: cert_dir / name for name in ("ca.crt", "tls.crt", "tls.key")}
    if all(path.is_file() for path in paths.values()) and not (cert_dir / "ca.key").exists():
        return paths
    return None


def security(cert_dir: Path) -> Security:
    """One Security for scheduler, workers and client, with encryption required."""
    mounted = mounted_secret(cert_dir)
    if mounted:
        pair = {"cert": str(mounted["tls.crt"]), "key": str(mounted["tls.key"])}
        return Security(tls_ca_file=str(mounted["ca.crt"]), require_encryption=True,
                        **{f"tls_{role}_{part}": path for role in ROLES for part, path in pair.items()})
    paths = ensure_certificates(cert_dir)
    return Security(
        tls_ca_file=str(paths["ca"][0]),
        tls_scheduler_cert=str(paths["scheduler"][0]), tls_scheduler_key=str(paths["scheduler"][1]),
        tls_worker_cert=str(paths["worker"][0]), tls_worker_key=str(paths["worker"][1]),
        tls_client_cert=str(paths["client"][0]), tls_client_key=str(paths["client"][1]),
        require_encryption=True,
    )
