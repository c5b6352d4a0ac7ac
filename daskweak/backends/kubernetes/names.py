"""Kubernetes' own rules for the names, labels, annotations and tolerations the settings put into pod specs.

A value the API server would refuse must be refused when the settings are read, naming the setting, before any
step starts: a DaskCluster the API accepts but whose pods the operator cannot create fails only minutes later,
in the operator's log. The rules are those of k8s.io/apimachinery/pkg/util/validation (IsDNS1123Label,
IsDNS1123Subdomain, IsDNS1035Label, IsQualifiedName, IsValidLabelValue) and of the core API's toleration
validation (pkg/apis/core/validation: ValidateTolerations). Pure functions: they raise ValueError saying what
is wrong; the settings turn that into a Problem.
"""

from __future__ import annotations

import json
import re
from typing import Any

DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # ≤ 63
DNS_1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")  # ≤ 253
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # ≤ 63: Service names
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")  # ≤ 63: a label key's name part
LABEL_VALUE = QUALIFIED_NAME  # ≤ 63, or empty
ANNOTATIONS_MAX_BYTES = 256 * 1024  # TotalAnnotationSizeLimitB: keys and values together
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
TOLERATION_FIELDS = {"key", "operator", "value", "effect", "tolerationSeconds"}
# Prefixes of the labels the Dask operator and daskweak select pods by: a site label there would move pods out of
# their Deployment's selector or the cleanup's.
RESERVED_LABEL_PREFIXES = ("dask.org/", "daskweak/")


def dns_1123_label(value: str, what: str = "name") -> str:
    if len(value) > 63 or not DNS_1123_LABEL.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a DNS-1123 label (lowercase letters, digits, '-'; ≤ 63)")
    return value


def dns_1123_subdomain(value: str, what: str = "name") -> str:
    if len(value) > 253 or not DNS_1123_SUBDOMAIN.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a DNS-1123 subdomain "
                         "(lowercase letters, digits, '-' and '.'; ≤ 253)")
    return value


def dns_1035_label(value: str, what: str = "name") -> str:
    if len(value) > 63 or not DNS_1035_LABEL.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a DNS-1035 label (a lowercase letter first, then lowercase "
                         "letters, digits, '-'; ≤ 63)")
    return value


def qualified_name(key: str, what: str = "key") -> str:
    """A label or annotation key: an optional DNS-1123 subdomain prefix and '/', then a name of ≤ 63."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        raise ValueError(f"{what} {key!r} has an empty prefix before '/'")
    if prefix:
        dns_1123_subdomain(prefix, f"{what} prefix")
    if len(name) > 63 or not QUALIFIED_NAME.fullmatch(name):
        raise ValueError(f"{what} {key!r}: the name part must be ≤ 63 characters, letters, digits, '-', '_' "
                         "or '.', beginning and ending with a letter or digit")
    return key


def label_value(value: str, key: str) -> str:
    if value and (len(value) > 63 or not LABEL_VALUE.fullmatch(value)):
        raise ValueError(f"label {key}={value!r}: a value must be empty or ≤ 63 characters, letters, digits, "
                         "'-', '_' or '.', beginning and ending with a letter or digit")
    return value


def labels(mapping: dict[str, str], what: str = "label") -> dict[str, str]:
    for key, value in mapping.items():
        qualified_name(key, f"{what} key")
        if key.startswith(RESERVED_LABEL_PREFIXES):
            raise ValueError(f"{what} key {key!r}: the prefixes {', '.join(RESERVED_LABEL_PREFIXES)} are the Dask "
                             "operator's and daskweak's own")
        label_value(value, key)
    return mapping


def annotations(mapping: dict[str, str]) -> dict[str, str]:
    for key in mapping:
        qualified_name(key, "annotation key")
    size = sum(len(key.encode()) + len(value.encode()) for key, value in mapping.items())
    if size > ANNOTATIONS_MAX_BYTES:
        raise ValueError(f"annotations of {size} bytes: at most {ANNOTATIONS_MAX_BYTES} in all")
    return mapping


def toleration(item: Any) -> dict[str, Any]:
    """One toleration as the API validates it (key, operator, value, effect, tolerationSeconds)."""
    if not isinstance(item, dict):
        raise ValueError(f"toleration {item!r} is not an object")
    unknown = set(item) - TOLERATION_FIELDS
    if unknown:
        raise ValueError(f"toleration {item!r}: unknown field(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(TOLERATION_FIELDS))})")
    key, operator = item.get("key", ""), item.get("operator", "Equal")
    value, effect = item.get("value", ""), item.get("effect", "")
    if not all(isinstance(x, str) for x in (key, operator, value, effect)):
        raise ValueError(f"toleration {item!r}: key, operator, value and effect are strings")
    if key:
        qualified_name(key, "toleration key")
    if operator not in ("Equal", "Exists"):
        raise ValueError(f"toleration {item!r}: operator must be Equal or Exists")
    if not key and operator != "Exists":
        raise ValueError(f"toleration {item!r}: without a key the operator must be Exists")
    if operator == "Exists" and value:
        raise ValueError(f"toleration {item!r}: operator Exists takes no value")
    if value:
        label_value(value, key)
    if effect and effect not in TAINT_EFFECTS:
        raise ValueError(f"toleration {item!r}: effect must be empty or one of {', '.join(TAINT_EFFECTS)}")
    seconds = item.get("tolerationSeconds")
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise ValueError(f"toleration {item!r}: tolerationSeconds is an integer")
        if effect != "NoExecute":
            raise ValueError(f"toleration {item!r}: tolerationSeconds needs effect NoExecute")
    return item


def parse_pairs(text: str) -> dict[str, str]:
    """`k=v,k=v` or a JSON object of strings; empty text is no pairs."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON object: {exc.msg}") from None
        if not all(isinstance(v, str) for v in value.values()):
            raise ValueError("a JSON object whose values are strings")
        return value
    pairs = {}
    for part in (p.strip() for p in text.split(",")):
        key, equals, value = part.partition("=")
        if not part or not equals:
            raise ValueError(f"{part!r} is not key=value")
        pairs[key.strip()] = value.strip()
    return pairs


def parse_json_list(text: str) -> list[Any]:
    text = text.strip()
    if not text:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from None
    if not isinstance(value, list):
        raise ValueError("a JSON list")
    return value
