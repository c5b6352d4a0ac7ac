"""The Pod Security Standards' baseline and restricted profiles as data, and a checker of pods against them.

The rules are those of https://kubernetes.io/docs/concepts/security/pod-security-standards/ ("Profile Details",
Kubernetes v1.33; the Pod Security admission controller, k8s.io/pod-security-admission/policy, enforces the same),
one `Rule` per restricted field of each control: which fields, and which values the profile allows there
(UNDEFINED: the field may be absent). Restricted is baseline plus its own rules. The Windows-only fields (hostProcess)
are checked too, since a pod spec may carry them on any OS.

`violations(pod)` reads a Pod (metadata and spec) and returns one line per field whose value the profile does not
allow, naming the field with its index (spec.containers[0].securityContext.allowPrivilegeEscalation), the value,
the control and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Any = _Undefined()


@dataclass(frozen=True)
class AnyOf:
    """A path segment: any of these keys (the three container lists)."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class Prefix:
    """A path segment: every key of a mapping that starts with this (annotation keys)."""

    prefix: str


EACH = "*"  # a path segment: every element of a list
CONTAINERS: tuple[Any, ...] = ("spec", AnyOf(("containers", "initContainers", "ephemeralContainers")), EACH)


@dataclass(frozen=True)
class Allowed:
    """What a field may hold: one of `values`, or what `test` accepts (`text` says which)."""

    values: tuple[Any, ...] = ()
    test: Callable[[Any], bool] | None = None
    text: str = ""

    def __call__(self, value: Any) -> bool:
        return value in self.values if self.test is None else self.test(value)

    def __str__(self) -> str:
        return self.text or ", ".join(repr(v) for v in self.values)


def one_of(*values: Any) -> Allowed:
    return Allowed(values=values)


@dataclass(frozen=True)
class Rule:
    profile: str  # baseline or restricted
    control: str  # the control's name on the page
    fields: tuple[tuple[Any, ...], ...]
    allowed: Allowed
    # A container field that may stay undefined when the pod-level field (this path) is allowed: its value then
    # counts (runAsNonRoot, seccomp).
    inherit: tuple[Any, ...] | None = field(default=None)


BASELINE_CAPABILITIES = ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT")
SAFE_SYSCTLS = ("kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes")
RESTRICTED_VOLUME_TYPES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret")
SECURITY = ("securityContext",)
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"

RULES: tuple[Rule, ...] = (
    # --- baseline ---
    Rule("baseline", "HostProcess", (("spec", *SECURITY, "windowsOptions", "hostProcess"),
                                     (*CONTAINERS, *SECURITY, "windowsOptions", "hostProcess")),
         one_of(UNDEFINED, False)),
    Rule("baseline", "Host Namespaces", (("spec", "hostNetwork"), ("spec", "hostPID"), ("spec", "hostIPC")),
         one_of(UNDEFINED, False)),
    Rule("baseline", "Privileged Containers", ((*CONTAINERS, *SECURITY, "privileged"),), one_of(UNDEFINED, False)),
    Rule("baseline", "Capabilities", ((*CONTAINERS, *SECURITY, "capabilities", "add", EACH),),
         one_of(UNDEFINED, *BASELINE_CAPABILITIES)),
    Rule("baseline", "HostPath Volumes", (("spec", "volumes", EACH, "hostPath"),), one_of(UNDEFINED)),
    Rule("baseline", "Host Ports", ((*CONTAINERS, "ports", EACH, "hostPort"),), one_of(UNDEFINED, 0)),
    Rule("baseline", "AppArmor", (("spec", *SECURITY, "appArmorProfile", "type"),
                                  (*CONTAINERS, *SECURITY, "appArmorProfile", "type")),
         one_of(UNDEFINED, "RuntimeDefault", "Localhost")),
    Rule("baseline", "AppArmor", (("metadata", "annotations", Prefix(APPARMOR_ANNOTATION)),),
         Allowed(test=lambda v: v is UNDEFINED or v == "runtime/default" or str(v).startswith("localhost/"),
                 text="undefined, runtime/default, localhost/*")),
    Rule("baseline", "SELinux", (("spec", *SECURITY, "seLinuxOptions", "type"),
                                 (*CONTAINERS, *SECURITY, "seLinuxOptions", "type")),
         one_of(UNDEFINED, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")),
    Rule("baseline", "SELinux", (("spec", *SECURITY, "seLinuxOptions", "user"),
                                 (*CONTAINERS, *SECURITY, "seLinuxOptions", "user"),
                                 ("spec", *SECURITY, "seLinuxOptions", "role"),
                                 (*CONTAINERS, *SECURITY, "seLinuxOptions", "role")),
         one_of(UNDEFINED, "")),
    Rule("baseline", "/proc Mount Type", ((*CONTAINERS, *SECURITY, "procMount"),), one_of(UNDEFINED, "Default")),
    Rule("baseline", "Seccomp", (("spec", *SECURITY, "seccompProfile", "type"),
                                 (*CONTAINERS, *SECURITY, "seccompProfile", "type")),
         one_of(UNDEFINED, "RuntimeDefault", "Localhost")),
    Rule("baseline", "Sysctls", (("spec", *SECURITY, "sysctls", EACH, "name"),), one_of(UNDEFINED, *SAFE_SYSCTLS)),
    # --- restricted: everything of baseline, and ---
    Rule("restricted", "Volume Types", (("spec", "volumes", EACH),),
         Allowed(test=lambda volume: len(set(volume) - {"name"}) == 1
                 and (set(volume) - {"name"}).pop() in RESTRICTED_VOLUME_TYPES,
                 text="a volume of one of the types " + ", ".join(RESTRICTED_VOLUME_TYPES))),
    Rule("restricted", "Privilege Escalation", ((*CONTAINERS, *SECURITY, "allowPrivilegeEscalation"),),
         one_of(False)),
    Rule("restricted", "Running as Non-root", (("spec", *SECURITY, "runAsNonRoot"),), one_of(UNDEFINED, True)),
    Rule("restricted", "Running as Non-root", ((*CONTAINERS, *SECURITY, "runAsNonRoot"),), one_of(True),
         inherit=("spec", *SECURITY, "runAsNonRoot")),
    Rule("restricted", "Running as Non-root user", (("spec", *SECURITY, "runAsUser"),
                                                    (*CONTAINERS, *SECURITY, "runAsUser")),
         Allowed(test=lambda v: v is UNDEFINED or (isinstance(v, int) and v != 0), text="undefined or non-zero")),
    Rule("restricted", "Seccomp", (("spec", *SECURITY, "seccompProfile", "type"),),
         one_of(UNDEFINED, "RuntimeDefault", "Localhost")),
    Rule("restricted", "Seccomp", ((*CONTAINERS, *SECURITY, "seccompProfile", "type"),),
         one_of("RuntimeDefault", "Localhost"), inherit=("spec", *SECURITY, "seccompProfile", "type")),
    Rule("restricted", "Capabilities", ((*CONTAINERS, *SECURITY, "capabilities", "drop"),),
         Allowed(test=lambda v: isinstance(v, list) and "ALL" in v, text="a list containing ALL")),
    Rule("restricted", "Capabilities", ((*CONTAINERS, *SECURITY, "capabilities", "add", EACH),),
         one_of(UNDEFINED, "NET_BIND_SERVICE")),
)
PROFILES = {"baseline": ("baseline",), "restricted": ("baseline", "restricted")}


def _walk(node: Any, path: tuple[Any, ...], where: str) -> Iterator[tuple[str, Any]]:
    """(concrete field, value) for every field `path` names in `node`; UNDEFINED where a key is absent. A list
    or mapping that is absent or empty has no elements to check."""
    if not path:
        yield where, node
        return
    segment, rest = path[0], path[1:]
    if segment == EACH:
        for index, item in enumerate(node if isinstance(node, list) else []):
            yield from _walk(item, rest, f"{where}[{index}]")
    elif isinstance(segment, AnyOf):
        for key in segment.keys:
            if isinstance(node, dict) and key in node:
                yield from _walk(node[key], rest, f"{where}.{key}")
    elif isinstance(segment, Prefix):
        for key, value in (node.items() if isinstance(node, dict) else []):
            if key.startswith(segment.prefix):
                yield from _walk(value, rest, f"{where}[{key}]")
    else:
        here = f"{where}.{segment}" if where else segment
        if isinstance(node, dict) and node.get(segment) is not None:
            yield from _walk(node[segment], rest, here)
        elif EACH not in rest and not any(isinstance(s, (AnyOf, Prefix)) for s in rest):
            yield ".".join([here, *rest]), UNDEFINED


def _value(pod: dict[str, Any], path: tuple[Any, ...]) -> Any:
    found = list(_walk(pod, path, ""))
    return found[0][1] if found else UNDEFINED


def violations(pod: dict[str, Any], profile: str = "restricted") -> list[str]:
    """Every field of `pod` (a Pod: metadata and spec) whose value `profile` does not allow, one line each."""
    found = []
    for rule in RULES:
        if rule.profile not in PROFILES[profile]:
            continue
        for path in rule.fields:
            for where, value in _walk(pod, path, ""):
                effective, why = value, ""
                if value is UNDEFINED and rule.inherit is not None:
                    effective = _value(pod, rule.inherit)
                    why = f" and {'.'.join(rule.inherit)} is {effective!r}"
                if not rule.allowed(effective):
                    found.append(f"{where}: {value!r}{why} ({rule.profile}, {rule.control}: allowed {rule.allowed})")
    return found


def pod(spec: dict[str, Any], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Pod object around a pod spec (what a Deployment's template becomes)."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata or {"name": "probe"}, "spec": spec}
