"""The multi-node development Slurm itself (slurm/dev-cluster/up --nodes 3): hosts that look like a site's,
a login node and compute nodes with their own names, addresses and /tmp, and a shared file system."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

from tests import slurm_cluster
from tests.conftest import wait_until
from tests.slurm_cluster import BRIDGE, DEV_CLUSTER, ROOT, address, namespace, veth

HOSTS = ("login", "node1", "node2", "node3")


def all_idle(cluster) -> bool:
    return cluster.node_states() == dict.fromkeys(cluster.nodes, "idle")


def test_sinfo_on_the_login_node_shows_three_idle_nodes(slurm_multinode):
    assert slurm_multinode.nodes == ("node1", "node2", "node3")
    assert wait_until(lambda: all_idle(slurm_multinode), timeout=60), slurm_multinode.node_states()


def test_every_host_has_its_own_hostname_and_eth0_address(slurm_multinode):
    for host in HOSTS:
        assert slurm_multinode.on(host, "hostname").stdout.strip() == host
        eth0 = slurm_multinode.on(host, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
        assert f"inet {address(host)}/24" in eth0
        # its own view of the network (sysfs too), and no way out: no default route
        assert sorted(slurm_multinode.on(host, "ls", "/sys/class/net").stdout.split()) == ["eth0", "lo"]
        assert "default" not in slurm_multinode.on(host, "ip", "route").stdout
        # the host-side end of its link, on the bridge: where fault tests add latency or cut the link
        link = subprocess.run(["ip", "-o", "link", "show", veth(host)], capture_output=True, text=True).stdout
        assert f"master {BRIDGE}" in link
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert namespace(host) in netns
    # the hosts reach each other by name over the bridge: node1 opens a connection to node3's slurmd
    port = re.search(r"^SlurmdPort=(\d+)$", slurm_multinode.conf.read_text(), re.M).group(1)
    slurm_multinode.on("node1", "timeout", "5", "bash", "-c", f"exec 3<>/dev/tcp/node3/{port}")


def test_a_job_runs_on_the_named_host_and_sees_the_shared_disk_not_the_login_nodes_tmp(slurm_multinode):
    cluster = slurm_multinode
    marker = f"login-only-{uuid.uuid4().hex[:8]}"
    cluster.login("sh", "-c", f"echo here >/tmp/{marker}")
    assert cluster.login("cat", f"/tmp/{marker}").stdout.strip() == "here"
    assert not Path("/tmp", marker).exists()  # the machine's /tmp is not the login node's either
    work = cluster.scratch("job")
    (work / "from-login.txt").write_text("shared\n")
    (work / "job.sh").write_text(
        "#!/bin/sh\n"
        "hostname\n"
        "ip -4 -o addr show dev eth0\n"
        f"cat {work}/from-login.txt\n"
        f"test -x {ROOT}/.venv/bin/python && echo checkout-there\n"
        f"test -e /tmp/{marker} && echo login-tmp-visible || echo login-tmp-invisible\n"
        "echo written-on-node >/tmp/node-local\n")
    # sbatch --wait: returns when the job has ended, no polling
    cluster.login("sbatch", "--wait", "-w", "node2", "-o", f"{work}/job.out", f"{work}/job.sh", cwd=work)
    lines = (work / "job.out").read_text().splitlines()
    assert lines[0] == "node2"
    assert f"inet {address('node2')}/24" in lines[1]
    assert lines[2:5] == ["shared", "checkout-there", "login-tmp-invisible"]
    # node-local: node2's /tmp kept the file, the login node's and node1's did not get it
    assert cluster.on("node2", "cat", "/tmp/node-local").stdout.strip() == "written-on-node"
    for host in ("login", "node1"):
        assert cluster.on(host, "test", "-e", "/tmp/node-local", check=False).returncode == 1
    # srun as well: one task on each node, each under its own name
    names = cluster.login("srun", "-N", "3", "--ntasks-per-node=1", "hostname").stdout.split()
    assert sorted(names) == ["node1", "node2", "node3"]
    cluster.on("node2", "rm", "-f", "/tmp/node-local")
    cluster.login("rm", "-f", f"/tmp/{marker}")
    assert wait_until(lambda: cluster.jobs() == [], timeout=30)


def test_login_runs_in_the_current_directory_with_the_clusters_settings(slurm_multinode):
    work = slurm_multinode.scratch("cwd")
    done = slurm_multinode.login("sh", "-c", 'pwd; echo "$SLURM_CONF"; echo "$DASKWEAK_SLURM_SHARED"', cwd=work)
    assert done.stdout.splitlines() == [str(work), str(slurm_multinode.conf), str(slurm_multinode.shared)]
    # a directory only the machine has (pytest's tmp_path is in its /tmp) is refused, not silently replaced
    elsewhere = slurm_multinode.login("true", cwd=Path.cwd(), check=False)
    assert elsewhere.returncode != 0 and str(Path.cwd()) in elsewhere.stderr


def daemon_pids(state: Path) -> dict[str, int]:
    return {pidfile.name: int(pidfile.read_text()) for pidfile in (state / "run").glob("*.pid")}


def running(pid: int, pidfile: str) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    daemon = pidfile.removesuffix(".pid").split("-")[0]
    return state != "Z" and comm in ("sleep" if daemon == "holder" else daemon, f"{daemon}d")


def test_up_twice_is_harmless(slurm_multinode):
    state = slurm_multinode.conf.parents[1]
    before = daemon_pids(state)
    assert {"slurmctld.pid", "slurmd-node1.pid", "holder-login.pid", "holder-node3.pid"} <= set(before)
    again = slurm_cluster.up(3, "--accounting")
    assert again == slurm_multinode
    assert daemon_pids(state) == before  # nothing restarted, nothing rebuilt
    assert all_idle(slurm_multinode)


def test_up_heals_links_that_fault_tests_cut_or_slowed(slurm_multinode):
    # node2 loses its network from inside; node3's link is throttled from the host side (this kernel has
    # no netem: tbf and htb are the qdiscs there are)
    slurm_multinode.on("node2", "ip", "link", "set", "eth0", "down")
    subprocess.run(["tc", "qdisc", "add", "dev", veth("node3"), "root", "tbf", "rate", "1mbit", "burst", "32kbit",
                    "latency", "400ms"], check=True)
    assert "state DOWN" in slurm_multinode.on("node2", "ip", "-o", "link", "show", "eth0").stdout
    slurm_cluster.up(3, "--accounting")
    assert "state UP" in slurm_multinode.on("node2", "ip", "-o", "link", "show", "eth0").stdout
    qdisc = subprocess.run(["tc", "qdisc", "show", "dev", veth("node3")], capture_output=True, text=True).stdout
    assert "tbf" not in qdisc, qdisc
    assert wait_until(lambda: all_idle(slurm_multinode), timeout=60), slurm_multinode.node_states()


def test_both_development_clusters_run_side_by_side(slurm_multinode):
    single = subprocess.run([str(DEV_CLUSTER / "up"), "--accounting"], capture_output=True, text=True,
                            timeout=600, cwd=ROOT)
    assert single.returncode == 0, single.stderr[-2000:]
    single_conf = single.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")
    assert Path(single_conf).parent != slurm_multinode.conf.parent
    ping = subprocess.run(["scontrol", "ping"], env=os.environ | {"SLURM_CONF": single_conf},
                          capture_output=True, text=True)
    assert "UP" in ping.stdout, ping.stdout + ping.stderr
    assert "UP" in slurm_multinode.login("scontrol", "ping").stdout
    multi = slurm_multinode.login("scontrol", "show", "config").stdout
    one = subprocess.run(["scontrol", "show", "config"], env=os.environ | {"SLURM_CONF": single_conf},
                         capture_output=True, text=True, check=True).stdout
    assert re.search(r"ClusterName\s+= dwmulti\n", multi) and re.search(r"ClusterName\s+= daskweak\n", one)
    assert str(slurm_multinode.conf.parents[1]) in multi and str(slurm_multinode.conf.parents[1]) not in one


def test_a_checkout_under_tmp_is_seen_by_every_host_at_its_own_path(slurm_multinode, tmp_path):
    """CI may clone under /tmp, which every host has its own of: `up` from such a checkout binds it into every
    host at its own path (hosts started from a checkout that is not there for them are built afresh)."""
    checkout = tmp_path / "clone"  # pytest's tmp_path is under the machine's /tmp
    shutil.copytree(DEV_CLUSTER, checkout / "slurm" / "dev-cluster")
    (checkout / "marker").write_text("seen from the clone\n")
    try:
        up = subprocess.run([str(checkout / "slurm" / "dev-cluster" / "up"), "--nodes", "3", "--accounting"],
                            capture_output=True, text=True, timeout=600, cwd=checkout)
        assert up.returncode == 0, up.stderr[-2000:]
        for host in HOSTS:
            seen = subprocess.run([str(checkout / "slurm" / "dev-cluster" / "node"), host, "cat", "marker"],
                                  cwd=checkout, capture_output=True, text=True, timeout=60)
            assert seen.stdout == "seen from the clone\n", (host, seen.stderr)
        # a job started from the clone runs there on a compute node
        job = subprocess.run([str(checkout / "slurm" / "dev-cluster" / "login"), "srun", "-w", "node2", "cat",
                              "marker"], cwd=checkout, capture_output=True, text=True, timeout=120)
        assert job.stdout == "seen from the clone\n", job.stderr
    finally:
        again = slurm_cluster.up(3, "--accounting")  # the hosts of this checkout, for the tests after this one
    assert again == slurm_multinode
    assert wait_until(lambda: all_idle(again), timeout=60), again.node_states()
    for host in HOSTS:  # …which see this checkout
        assert slurm_multinode.on(host, "test", "-e", str(ROOT / "slurm" / "dev-cluster" / "up"), cwd=ROOT,
                                  check=False).returncode == 0


def test_down_after_a_crash_leaves_nothing_behind_and_up_works_again(slurm_multinode):
    """Runs last in this module: the cluster is crashed, removed and started again for the next tests."""
    state = slurm_multinode.conf.parents[1]
    pids = daemon_pids(state)
    for name in ("holder-login.pid", "holder-node1.pid", "holder-node2.pid", "holder-node3.pid",
                 "slurmctld.pid", "slurmd-node2.pid", "munged.pid"):
        os.kill(pids[name], signal.SIGKILL)
    down = slurm_cluster.down(3)
    assert down.returncode == 0, down.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not [line for line in netns.splitlines() if line.startswith("dw")], netns
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert "dwv-" not in links and BRIDGE not in links, links
    # no daemon, holder or job survives: every recorded process is gone (or a zombie whose reaper is slow;
    # a reused PID would be another program)
    for name, pid in pids.items():
        assert not running(pid, name), f"{name} ({pid}) still runs"
    assert not list((state / "run").glob("*.pid"))
    again = slurm_cluster.up(3, "--accounting")
    assert again == slurm_multinode
    assert wait_until(lambda: all_idle(again), timeout=60), again.node_states()
    assert again.login("srun", "-w", "node2", "hostname").stdout.strip() == "node2"
