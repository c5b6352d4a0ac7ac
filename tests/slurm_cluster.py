"""The multi-node development Slurm (`slurm/dev-cluster/up --nodes N`) as tests see it: a login node and
compute nodes node1…nodeN, each a network + UTS + mount namespace of this machine with its own hostname, its
eth0 address on the bridge dwbr0 and its own /tmp; the checkout and SHARED are seen by all. Commands run on
a host through `slurm/dev-cluster/node HOST …` (the login node: `slurm/dev-cluster/login …`), exactly as by
hand. The session fixture `slurm_multinode` (tests/conftest.py) starts it with accounting."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_CLUSTER = ROOT / "slurm" / "dev-cluster"
BRIDGE = "dwbr0"


class ClusterDidNotStart(RuntimeError):
    pass


def namespace(host: str) -> str:
    """The network namespace of a host (`ip netns exec dwnode2 …`, `ip -n dwnode2 …`)."""
    return f"dw{host}"


def veth(host: str) -> str:
    """The host-side end of a host's link on the bridge (its peer is eth0 in the host): `ip link set dwv-node2
    down` cuts node2 off, `tc qdisc add dev dwv-node2 root tbf …` throttles it (this kernel has no netem)."""
    return f"dwv-{host}"


def address(host: str) -> str:
    """A host's eth0 address: login 10.77.0.1, nodeK 10.77.0.(10+K)."""
    return "10.77.0.1" if host == "login" else f"10.77.0.{10 + int(host.removeprefix('node'))}"


@dataclass(frozen=True)
class MultiNodeSlurm:
    exports: dict[str, str]  # what `up` printed: SLURM_CONF, DASKWEAK_SLURM_SHARED
    nodes: tuple[str, ...]   # the compute nodes: node1, node2, …

    @property
    def conf(self) -> Path:
        return Path(self.exports["SLURM_CONF"])

    @property
    def shared(self) -> Path:
        """Seen by every host at the same path (for OUT_DIR, CERT_DIR, worker environments)."""
        return Path(self.exports["DASKWEAK_SLURM_SHARED"])

    @property
    def login_command(self) -> list[str]:
        """The prefix that runs a command on the login node, for Popen and friends (the directory it is run
        from must exist there: not pytest's tmp_path, which is the machine's /tmp)."""
        return [str(DEV_CLUSTER / "login")]

    def on(self, host: str, *command: str, cwd: Path | str | None = None, check: bool = True,
           timeout: float = 300, env: dict[str, str] | None = None, input: str | None = None,
           ) -> subprocess.CompletedProcess[str]:
        """Run a command on a host (login, node1…), in cwd (default: the shared directory)."""
        done = subprocess.run([str(DEV_CLUSTER / "node"), host, *command], cwd=cwd or self.shared, env=env,
                              input=input, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"on {host}: {' '.join(command)} exited {done.returncode}:\n"
                                 f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return done

    def login(self, *command: str, **options) -> subprocess.CompletedProcess[str]:
        """Run a command on the login node (where the driver runs on a site)."""
        return self.on("login", *command, **options)

    def jobs(self) -> list[str]:
        """The queue, as the login node sees it: one "id name state" line per job."""
        out = self.login("squeue", "-h", "-o", "%i %j %T").stdout
        return [line for line in out.splitlines() if line.strip()]

    def node_states(self) -> dict[str, str]:
        out = self.login("sinfo", "-h", "-N", "-o", "%N %T").stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def scratch(self, name: str = "test") -> Path:
        """A fresh directory on the shared file system (the machine's /tmp is not there)."""
        path = self.shared / "tests" / f"{name}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path


def up(nodes: int = 3, *args: str, timeout: float = 600) -> MultiNodeSlurm:
    """Start (or keep) the multi-node cluster; its own message if it does not come up."""
    done = subprocess.run([str(DEV_CLUSTER / "up"), "--nodes", str(nodes), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        raise ClusterDidNotStart(f"slurm/dev-cluster/up --nodes {nodes} {' '.join(args)} failed:\n"
                                 f"{done.stderr[-3000:]}")
    exports = dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines()
                   if line.startswith("export "))
    return MultiNodeSlurm(exports=exports, nodes=tuple(f"node{i}" for i in range(1, nodes + 1)))


def down(nodes: int = 3) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DEV_CLUSTER / "down"), "--nodes", str(nodes)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
