"""Run one step in a fresh Python process, as Airflow's tasks do.

A task process is a poor host for a cluster: under the LocalExecutor it carries an unusable database URL
and its `__main__` is Airflow's runner, so spawned worker processes fail to start. A clean
`python -m daskweak.isolated` child owns the cluster instead; it dies with its parent (PR_SET_PDEATHSIG)
and turns SIGTERM into an orderly teardown, so a killed task leaves no workers behind.

The request travels on stdin (it may hold a database password), the summary comes back as JSON on stdout.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from typing import Any

from daskweak.errors import DaskweakError

PR_SET_PDEATHSIG = 1


class StepProcessFailed(DaskweakError):
    """The step's process exited without a summary (crashed, killed)."""


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_step_isolated(request: dict[str, Any], *, grace: float = 60.0) -> dict[str, Any]:
    """Run `request` ({"env_file", "overrides", "step", "run_id"}, and "only" and "loops" for a re-measure) in
    a child and return its summary."""
    cores = request["step"]["cores"]
    # Without distributed's parent marker, the step process keeps its name (`daskweak.isolated --cores=N`)
    # in `ps` instead of taking the title of the scheduler it hosts.
    env = {key: value for key, value in os.environ.items() if key != "__DASK_PARENT_PID"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskweak.isolated", f"--cores={cores}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent, env=env,
    )
    try:
        out, _ = proc.communicate(json.dumps(request))
    except BaseException:
        # The task is being killed (or failed): let the child close its cluster and record the step.
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise StepProcessFailed(f"the process of the {cores}-core step exited with code {proc.returncode}")
    return json.loads(lines[-1])


def main() -> int:
    """Child side: settings from the request, one step, its summary on stdout."""
    from daskweak.logs import configure_logging
    from daskweak.plan import Step
    from daskweak.runner import run_step
    from daskweak.settings import load_settings
    from daskweak.signals import interrupts_raise

    request = json.loads(sys.stdin.read())
    settings = load_settings(request.get("env_file"), **request.get("overrides", {}))
    configure_logging(settings.verbose)
    step = Step.from_dict(request["step"])
    with interrupts_raise():
        summary = run_step(settings, step, request["run_id"], only=request.get("only"), loops=request.get("loops"))
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
