"""Shared fixtures: small real clusters, isolated settings, and a real PostgreSQL server."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daskweak.settings import Settings, load_settings

SMALL = {
    "problem_size_array": 256,
    "problem_size_dataframes": 20_000,
    "problem_size_tasks": 20,
    "obs_per_iter": 2,
    "warmup": 1,
    "timeout": 60,
}


# How the parallel pass (bin/test, pytest-xdist) shares the machine. The files of a rig whose state their tests
# change run on one worker, in file order: the Kubernetes rig (the podman tests switch its runtime for everyone;
# the multi-node tests want it idle), the multi-node Slurm (tests cut links, crash and rebuild it) and the
# single-node Slurm. Every other file is a group of its own, so its module-scoped fixtures (a sweep, a
# browser, a PostgreSQL server) are made once. The rig groups go out first: they are the longest, and a worker
# that finishes early takes the next file, the longest first. By file, not by test: pytest-xdist's own
# `xdist_group` marks do not reach its scheduler under pytest 9.2 (it sets `item._nodeid`, which pytest no
# longer reads).
RIG_FILES = {
    "kubernetes": ("test_airflow_kubernetes_executor.py", "test_chart.py", "test_hardware_class.py", "test_images.py",
                   "test_kubernetes.py", "test_kubernetes_client_pod.py", "test_kubernetes_multinode.py",
                   "test_kubernetes_podman.py", "test_manifests.py", "test_pod_security.py", "test_settings.py"),
    "slurm-multinode": ("test_dev_cluster.py", "test_slurm_multinode.py"),
    "slurm": ("test_slurm.py",),
}
# After the rigs, the longest of the other files (bin/test prints the longest files of a run), so the last
# files to start are short ones.
LONGEST_FILES = ("test_airflow.py", "test_database_outage.py", "test_readme.py", "test_airflow_server.py",
                 "test_secrets.py", "test_runner.py", "test_airflow_celery.py", "test_bin_airflow.py",
                 "test_report_pages.py", "test_calibration.py", "test_reports.py", "test_cli.py", "test_tls.py",
                 "test_warmups.py", "test_store.py", "test_settings_airflow.py")
RIG_OF_FIXTURE = {"kube": "kubernetes", "slurm_multinode": "slurm-multinode", "slurm": "slurm"}
GROUP_OF_FILE = {name: rig for rig, names in RIG_FILES.items() for name in names}


def group_of(nodeid: str) -> str:
    """The worker group of a test: its rig's, else its file's."""
    name = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return GROUP_OF_FILE.get(name, name)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByRig(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return ByRig(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # a new file that uses a rig must say so, or it would run beside the rig's own tests
        for fixture, rig in RIG_OF_FIXTURE.items():
            if fixture in item.fixturenames and group_of(item.nodeid) != rig:
                raise pytest.UsageError(f"{item.nodeid} uses the {rig} rig (fixture {fixture}): add its file to "
                                        f"RIG_FILES[{rig!r}] in tests/conftest.py")
    order = {group: rank for rank, group in enumerate((*RIG_FILES, *LONGEST_FILES))}
    items.sort(key=lambda item: order.get(group_of(item.nodeid), len(order)))  # stable: file order otherwise


def need(reason: str) -> None:
    """Skip with a reason locally; under CI a missing prerequisite is a failure, never a silent skip."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No developer .env or settings variables leak into a test."""
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    return tmp_path


@pytest.fixture
def small(tmp_path: Path):
    def make(**overrides: object) -> Settings:
        return load_settings(**(SMALL | {"res_dir": str(tmp_path / "results")} | overrides))

    return make


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Postgres:
    """A throwaway PostgreSQL cluster from Debian's binaries, on loopback; `stop` and `start` make an outage."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            need("PostgreSQL server binaries (Debian package 'postgresql') are not installed")
        self.bindir = Path(found[-1]).parent
        # Not under pytest's tmp dir: that is private to root, and PostgreSQL refuses to run as root.
        self.home = Path(tempfile.mkdtemp(prefix="daskweak-pg-"))
        self.data = self.home / "data"
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.home, "postgres")
        subprocess.run([*self.as_user, str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "-A", "trust"], check=True, capture_output=True)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-l",
                        str(self.data / "log"), "-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1",
                        "start"], check=True, capture_output=True)

    def stop(self, check: bool = True) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast",
                        "stop"], check=check, capture_output=True)

    def remove(self) -> None:
        self.stop(check=False)
        shutil.rmtree(self.home, ignore_errors=True)


SHARED_POSTGRES = "daskweak_postgres"  # the key of xdist's workerinput that names the run's one server


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """pytest-xdist, in the controller, for each worker: the run's one PostgreSQL server, started for the first."""
    server = getattr(node.config, "_daskweak_postgres", None)
    if server is None:
        server = Postgres()
        server.start()
        node.config._daskweak_postgres = server
    node.workerinput[SHARED_POSTGRES] = server.url


def pytest_unconfigure(config: pytest.Config) -> None:
    server = getattr(config, "_daskweak_postgres", None)
    if server is not None:
        server.remove()


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL database of this session's own, dropped afterwards. Under pytest-xdist each worker gets a
    database of its own on the run's one server (started by the controller); alone, a server of its own."""
    shared = getattr(request.config, "workerinput", {}).get(SHARED_POSTGRES)
    if shared is None:
        server = Postgres()
        server.start()
        try:
            yield server.url
        finally:
            server.remove()
        return
    import psycopg

    name = f"daskweak_{request.config.workerinput['workerid']}"
    admin = shared.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield shared.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cluster_processes() -> list:
    """Dask worker (or step) processes below this test process; multiprocessing's resource tracker and
    finished children do not count."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            text = " ".join(proc.cmdline())
            if proc.status() != psutil.STATUS_ZOMBIE and ("spawn_main" in text or "daskweak.isolated" in text):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def assert_tls_only(deployment) -> None:
    """The cluster speaks TLS, works for the certified client, and refuses a plaintext one."""
    from distributed import Client

    address = deployment.client.scheduler.address
    assert address.startswith("tls://")
    assert deployment.client.submit(sum, [1, 2]).result() == 3
    with pytest.raises((OSError, TimeoutError)):
        Client(address.replace("tls://", "tcp://"), timeout=3)


def kubectl(*args: str, kubeconfig: Path | None = None, stdin: str | None = None, check: bool = True) -> str:
    command = ["kubectl", *(["--kubeconfig", str(kubeconfig)] if kubeconfig else []), *args]
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)}: {done.stderr}")
    return done.stdout.strip()


def _rig_coming_up() -> None:
    """`.ci/run` starts k8s-local beside the first tests (its first build takes minutes) and names, in
    DASKWEAK_K8S_EXPORTS, the file its `export KUBECONFIG=…` will be written to (FILE.failed: why it never
    came): wait for either."""
    exports = os.environ.get("DASKWEAK_K8S_EXPORTS")
    if not exports or os.environ.get("KUBECONFIG"):
        return
    done, failed = Path(exports), Path(exports + ".failed")
    if not wait_until(lambda: done.exists() or failed.exists(), timeout=1800, interval=1):
        pytest.fail(f"k8s-local did not come up within 30 minutes ({exports})")
    if failed.exists():
        pytest.fail(f"k8s-local did not come up (.ci/run):\n{failed.read_text()}")
    for line in done.read_text().splitlines():
        if line.startswith("export KUBECONFIG="):
            os.environ["KUBECONFIG"] = line.removeprefix("export KUBECONFIG=").strip().strip("'\"")


@pytest.fixture(scope="session")
def kube() -> str:
    """The API server of KUBECONFIG, checked to answer and to serve the Dask operator's CRDs (CI: k8s-local)."""
    _rig_coming_up()
    config = os.environ.get("KUBECONFIG")
    if not config or not os.path.exists(config) or not shutil.which("kubectl"):
        need("no Kubernetes cluster: set KUBECONFIG (e.g. `eval \"$(../shared/k8s-local/up)\"`)")
    probe = subprocess.run(["kubectl", "get", "crd", "daskclusters.kubernetes.dask.org"], capture_output=True,
                           text=True, timeout=60)
    if probe.returncode != 0:
        need(f"the cluster of KUBECONFIG={config} does not answer or lacks the Dask operator's CRDs: "
             f"{probe.stderr.strip()[-500:]}")
    return config


@pytest.fixture
def kube_namespace(kube: str) -> Iterator[str]:
    """A fresh namespace, deleted after the test, which must leave no DaskCluster in it."""
    import uuid

    name = f"dw-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    left = kubectl("get", "daskclusters", "-n", name, "-o", "name", check=False)
    kubectl("delete", "namespace", name, "--wait=false")
    assert left == "", f"a test left DaskClusters behind: {left}"


def daskclusters(namespace: str) -> list[str]:
    return kubectl("get", "daskclusters", "-n", namespace, "-o", "name").split()


@pytest.fixture
def kube_settings(small, kube_namespace):
    """Settings of a small Kubernetes sweep in the test's namespace; the client runs here, outside the cluster."""
    def make(**overrides):
        return small(**({"backend": "kubernetes", "kube_namespace": kube_namespace, "container_image": "daskweak:test",
                         "kube_service_type": "LoadBalancer", "max_n_cores": 2, "suites": "tasks",
                         "obs_per_iter": 1, "timeout": 90} | overrides))

    return make


@pytest.fixture
def tls_settings(kube_settings, tmp_path):
    def make(**overrides):
        return kube_settings(**({"use_ssl": True, "cert_dir": str(tmp_path / "certs"),
                                 "secret_cert_name": "dw-tls"} | overrides))

    return make


def create_secret(settings) -> None:
    """The TLS Secret of `settings` (CERT_DIR's CA and scheduler pair), made by `daskweak k8s-secret`."""
    from daskweak.cli import main

    assert main(["k8s-secret", "--set", f"KUBE_NAMESPACE={settings.kube_namespace}", "--set", "USE_SSL=True",
                 "--set", f"CERT_DIR={settings.cert_dir}", "--set", f"SECRET_CERT_NAME={settings.secret_cert_name}",
                 "--set", "BACKEND=kubernetes", "--set", "CONTAINER_IMAGE=x"]) == 0


ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"  # screenshots; CI keeps them (git-ignored)


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Selenium through Debian's chromedriver: no browser download."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        need("Debian's chromium and chromium-driver are not installed (bin/test installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


def console_errors(driver) -> list[str]:
    """What the page logged as errors in the browser's console."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.fixture(scope="session")
def slurm_multinode():
    """The multi-node development Slurm with accounting (`slurm/dev-cluster/up --nodes 3 --accounting`): a
    login node and node1…node3, each its own network/hostname/tmp (tests/slurm_cluster.py). Yields a
    MultiNodeSlurm: .exports (SLURM_CONF, DASKWEAK_SLURM_SHARED), .shared, .login(cmd…), .on(host, cmd…),
    .login_command, .jobs(), .scratch(). Left up at the end, like the single-node cluster."""
    from tests import slurm_cluster

    if os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nsenter") and shutil.which("unshare")):
        need("the multi-node Slurm needs root, iproute2 and util-linux (network and mount namespaces)")
    try:
        cluster = slurm_cluster.up(3, "--accounting")
    except slurm_cluster.ClusterDidNotStart as error:
        need(str(error))
    yield cluster
    assert cluster.jobs() == [], "a test left jobs on the multi-node Slurm"


class CpuQuota:
    """A real CPU limit: a cgroup whose CPU quota is `share` CPUs (cgroup v1 `cpu.cfs_quota_us`, or v2
    `cpu.max`); `prefix` runs a command inside it, with everything it starts. Neither hierarchy: an error,
    never a skip."""

    def __init__(self, share: float):
        self.share = share
        name = f"daskweak-test-{os.getpid()}-{time.monotonic_ns()}"
        v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
        if (v1 / "cpu.cfs_quota_us").exists():
            self.group = v1 / name
            self.group.mkdir()
            period = int((self.group / "cpu.cfs_period_us").read_text())
            (self.group / "cpu.cfs_quota_us").write_text(str(int(share * period)))
        elif (v2 / "cgroup.controllers").exists() and "cpu" in (v2 / "cgroup.controllers").read_text().split():
            (v2 / "cgroup.subtree_control").write_text("+cpu")
            self.group = v2 / name
            self.group.mkdir()
            (self.group / "cpu.max").write_text(f"{int(share * 100_000)} 100000")
        else:
            raise RuntimeError("no cgroup CPU controller at /sys/fs/cgroup/cpu (v1) or /sys/fs/cgroup (v2)")
        self.prefix = ["sh", "-c", f'echo $$ > {self.group}/cgroup.procs && exec "$@"', "sh"]

    def close(self) -> None:
        for pid in (self.group / "cgroup.procs").read_text().split():  # leftovers of what ran inside
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        assert wait_until(lambda: not (self.group / "cgroup.procs").read_text().split(), 30, 0.1)
        self.group.rmdir()
