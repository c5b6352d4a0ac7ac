"""Memory sizes with explicit units: Slurm counts GB, Kubernetes Gi, and the two must never mix silently."""

from __future__ import annotations

import re

MEMORY_PATTERN = r"^\s*\d+(\.\d+)?\s*([KMGT]i?B?|[kmgt]i?b?|B|b)?\s*$"

_DECIMAL = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def to_bytes(text: str, *, bare_unit: str) -> int:
    """Bytes of "300GB", "300G" (decimal), "300Gi"/"300GiB" (binary); a bare number takes `bare_unit`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match:
        raise ValueError(f"not a memory size: {text!r}")
    number, unit = float(match.group(1)), match.group(2) or bare_unit
    unit = unit[0].upper() + unit[1:]
    unit = unit.removesuffix("B").removesuffix("b") if len(unit) > 1 else unit
    if unit in _BINARY:
        return int(number * _BINARY[unit])
    return int(number * _DECIMAL[unit])

