"""What `bin/test` prints after its two passes: each pass's wall time, the slowest tests of both (setup and
teardown included, as JUnit XML records them), the longest files, and one closing line with the counts of
both passes."""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def read(paths: list[Path]) -> list[tuple[float, str, str]]:
    """(seconds, test id, outcome) of every test case in the reports that exist."""
    cases = []
    for path in paths:
        if not path.exists():
            continue
        for case in ET.parse(path).getroot().iter("testcase"):
            module = case.get("classname", "").replace(".", "/")
            test_id = f"{module}.py::{case.get('name')}"
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome = "failed"
                elif child.tag == "skipped" and outcome == "passed":
                    outcome = "skipped"
            cases.append((float(case.get("time") or 0.0), test_id, outcome))
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--slowest", type=int, default=25)
    parser.add_argument("--parallel-seconds", type=float)
    parser.add_argument("--alone-seconds", type=float)
    args = parser.parse_args(argv)
    cases = read(args.reports)
    if args.parallel_seconds is not None:
        print(f"bin/test: parallel pass {args.parallel_seconds:.0f} s, alone pass {args.alone_seconds or 0:.0f} s")
    print(f"bin/test: the {args.slowest} slowest tests of both passes")
    for seconds, test_id, outcome in sorted(cases, reverse=True)[: args.slowest]:
        print(f"{seconds:8.1f}s  {test_id}{'' if outcome == 'passed' else f'  ({outcome})'}")
    per_file: dict[str, float] = {}
    for seconds, test_id, _ in cases:
        name = test_id.split("::", 1)[0]
        per_file[name] = per_file.get(name, 0.0) + seconds
    print("bin/test: the 15 longest files (tests/conftest.py sends the longest out first)")
    for name, seconds in sorted(per_file.items(), key=lambda item: -item[1])[:15]:
        print(f"{seconds:8.1f}s  {name}")
    counts = {kind: sum(1 for *_, outcome in cases if outcome == kind) for kind in ("passed", "failed", "skipped")}
    print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    return 1 if counts["failed"] or not cases else 0


if __name__ == "__main__":
    sys.exit(main())
