"""README.md says what the code does: its operations table is generated from the workloads, and every shell
command in its code blocks either runs in a test, as written, or is marked as needing something CI lacks."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from daskweak.settings import Settings
from daskweak.workloads import catalogue, operations_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELL_FENCES = {"", "bash", "sh", "shell", "console", "zsh"}  # ```text and others are output, not commands
HOW_TO_FIX = (
    "Run it in a test and list it in tests/test_readme.py (RUN_AS_WRITTEN: tests that run every README command "
    "with a prefix; ELSEWHERE: the test that runs one command, with evidence), or mark it in README.md with a "
    "trailing `# needs: <what it needs>` comment (on a line of its own atop a block: the whole block); "
    "see README.md, Development."
)

# Tests that read README.md and run every command starting with the prefix exactly as written (placeholders
# such as RUN_ID filled in, `./bin/` taken from this checkout, the working directory a temporary one).
RUN_AS_WRITTEN = {
    "./bin/daskweak ": "tests/test_readme.py::test_the_cli_examples_run_as_written",
    "./bin/airflow dags test ": "tests/test_readme.py::test_the_airflow_set_up_command_runs_the_benchmark",
    "./bin/airflow standalone": "tests/test_bin_airflow.py::test_standalone_as_the_readme_starts_it_serves_the_ui_api",
    "TOKEN=$(curl ": "tests/test_bin_airflow.py::test_standalone_as_the_readme_starts_it_serves_the_ui_api",
    "curl ": "tests/test_bin_airflow.py::test_standalone_as_the_readme_starts_it_serves_the_ui_api",
}

# Commands run elsewhere: command → (who runs it, the file that shows it, strings that file must contain).
ELSEWHERE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "./bin/test": (".ci/run (the CI entry point; it cannot run inside itself)", ".ci/run", ("./bin/test",)),
    'eval "$(K8S_LOCAL_POD_PATH=$PWD/.venv/bin ../shared/k8s-local/up)" && ./bin/test tests/test_kubernetes.py': (
        ".ci/run (packages, rigs, then the whole suite and ruff)", ".ci/run",
        ("k8s-local", "K8S_LOCAL_POD_PATH", "/.venv/bin", "./bin/test"),
    ),
    'eval "$(slurm/dev-cluster/up --accounting)"': (
        "tests/test_slurm.py (module fixture `slurm`)", "tests/test_slurm.py",
        ('"slurm" / "dev-cluster" / "up"', 'start_slurm("--accounting")', "export SLURM_CONF="),
    ),
    # The services one by one, as tests/test_airflow_server.py starts them (through tests/airflow_harness.py),
    # with a free port instead of 8080.
    "export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:8080/execution/": (
        "tests/test_airflow_server.py", "tests/airflow_harness.py",
        ('"AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/"',),
    ),
    "export AIRFLOW__API_AUTH__JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')": (
        "tests/test_airflow_server.py", "tests/airflow_harness.py", ('"AIRFLOW__API_AUTH__JWT_SECRET"',),
    ),
    "./bin/airflow api-server -H 127.0.0.1 -p 8080": (
        "tests/test_airflow_server.py", "tests/airflow_harness.py",
        ('AIRFLOW = str(ROOT / "bin" / "airflow")', '[AIRFLOW, "api-server", "-H", "127.0.0.1", "-p", str(self.port)]'),
    ),
    "./bin/airflow scheduler": (
        "tests/test_airflow_server.py", "tests/airflow_harness.py", ('[AIRFLOW, "scheduler"]',),
    ),
    "./bin/airflow dag-processor": (
        "tests/test_airflow_server.py", "tests/airflow_harness.py", ('[AIRFLOW, "dag-processor"]',),
    ),
}


@dataclass(frozen=True)
class Command:
    """One shell command of README.md: where it starts, its text without comments, and what it needs."""

    line: int
    text: str  # continuation lines joined, comments dropped, whitespace collapsed: the key of the tables
    source: str  # as written, for running it
    needs: str | None  # from a `# needs: …` marker on the command or atop its block


def split_comment(line: str) -> tuple[str, str]:
    """The code and the trailing comment of one shell line (a `#` outside quotes, at the start or after a space)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def marker(comment: str) -> str | None:
    found = re.search(r"\bneeds:\s*(.+)", comment)
    return found.group(1).strip() if found else None


def readme_commands(text: str | None = None) -> list[Command]:
    """Every command of README.md's shell code blocks, in order."""
    lines = (README.read_text() if text is None else text).splitlines()
    commands: list[Command] = []
    fence: str | None = None
    block_needs: str | None = None
    pending: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        opening = re.match(r"^\s*```\s*(\S*)", line)
        if opening and fence is None:
            fence, block_needs, pending = opening.group(1).lower(), None, []
            continue
        if opening:
            fence = None
            continue
        if fence is None or fence not in SHELL_FENCES:
            continue
        code, comment = split_comment(line)
        if not code.strip() and not pending:  # a blank or comment-only line; a marker here covers what follows
            block_needs = marker(comment) or block_needs
            continue
        pending.append((number, line))
        if code.endswith("\\"):
            continue
        parts = [split_comment(raw) for _, raw in pending]
        joined = " ".join(code.removesuffix("\\").strip() for code, _ in parts)
        needs = next((m for _, c in parts if (m := marker(c))), None) or block_needs
        commands.append(Command(pending[0][0], " ".join(joined.split()), "\n".join(raw for _, raw in pending), needs))
        pending = []
    return commands


def who_runs(command: Command) -> str | None:
    if command.needs:
        return f"marked: needs {command.needs}"
    if command.text in ELSEWHERE:
        return ELSEWHERE[command.text][0]
    return next((test for prefix, test in RUN_AS_WRITTEN.items() if command.text.startswith(prefix)), None)


def as_written(prefix: str) -> list[Command]:
    """The unmarked README commands a RUN_AS_WRITTEN test runs."""
    return [c for c in readme_commands() if c.text.startswith(prefix) and not c.needs and c.text not in ELSEWHERE]


def from_this_checkout(source: str) -> str:
    """`./bin/…` of this checkout, so the command can run in a temporary working directory."""
    return re.sub(r"(?<![\w./])\./bin/", f"{ROOT}/bin/", source)


def test_the_operations_table_is_the_one_generated_from_the_workloads():
    text = README.read_text()
    assert operations_table() in text, (
        "README.md's operations table differs from the workload definitions: replace it with the output of "
        "`.venv/bin/python -m daskweak.workloads`")
    assert "map_blocks(np.cumsum, axis=1)" in text and "three quarters of the rows" in text
    undescribed = [f"{suite}.{op.name}" for suite, ops in catalogue().items() for op in ops if not op.describe]
    assert not undescribed, f"give these operations a describe= text next to their definition: {undescribed}"


def test_every_readme_command_runs_in_a_test_or_is_marked():
    commands = readme_commands()
    assert len(commands) > 10, "no shell blocks found: has README.md's layout changed?"
    unaccounted = [f"README.md:{c.line}: `{c.text}`" for c in commands if who_runs(c) is None]
    assert not unaccounted, "\n".join([*unaccounted, HOW_TO_FIX])
    stale = set(ELSEWHERE) - {c.text for c in commands}
    assert not stale, f"tests/test_readme.py's ELSEWHERE lists commands README.md no longer has: {sorted(stale)}"


def test_each_mapped_command_is_really_run_where_the_table_says():
    for command, (who, path, evidence) in ELSEWHERE.items():
        text = (ROOT / path).read_text()
        missing = [e for e in evidence if e not in text]
        assert not missing, f"`{command}` is said to run in {who}, but {path} lacks {missing}"
    for prefix, test in RUN_AS_WRITTEN.items():
        path, name = test.split("::")
        assert f"def {name}(" in (ROOT / path).read_text(), f"RUN_AS_WRITTEN[{prefix!r}]: no test {test}"


def test_the_checker_finds_commands_markers_and_new_unlisted_commands():
    sample = "\n".join([
        "```bash", "# needs: Docker", "docker build .", "```", "```text", "./bin/daskweak output", "```",
        "```bash", "./bin/daskweak plan   # the steps", "helm install x \\", "    --set a=b   # needs: a cluster",
        "./bin/daskweak results sync", "make world", "```",
    ])
    found = readme_commands(sample)
    assert [(c.text, c.needs) for c in found] == [
        ("docker build .", "Docker"), ("./bin/daskweak plan", None), ("helm install x --set a=b", "a cluster"),
        ("./bin/daskweak results sync", None), ("make world", None)]
    assert [who_runs(c) is None for c in found] == [False, False, False, False, True]


def small_environment(tmp_path: Path) -> dict[str, str]:
    """The user's environment without settings or Airflow variables, and problem sizes that run in seconds."""
    settings = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in settings and not k.startswith("AIRFLOW")}
    env.pop("DASKWEAK_ENV_FILE", None)
    return env | {"PROBLEM_SIZE_ARRAY": "256", "PROBLEM_SIZE_DATAFRAMES": "20000", "PROBLEM_SIZE_TASKS": "20",
                  "OBS_PER_ITER": "2", "WARMUP": "0", "TIMEOUT": "60", "RES_DIR": str(tmp_path / "results")}


def run_ids(results: Path) -> list[str]:
    from daskweak.store import ResultStore

    database = results / "daskweak.sqlite"
    if not database.exists():
        return []
    with ResultStore(f"sqlite:///{database}") as store:
        return sorted(store.runs()["run_id"])


def fill_placeholders(source: str, runs: list[str]) -> str:
    """RUN_ID is the latest run, RUN_A and RUN_B the first two; optional `[…]` arguments are left out."""
    source = re.sub(r"\s*\[[A-Z_]+…?\]", "", source)
    for name, pick in (("RUN_ID", -1), ("RUN_A", 0), ("RUN_B", 1)):
        if re.search(rf"\b{name}\b", source):
            assert len(runs) > max(pick, -pick - 1), f"{name} in `{source}` but only runs {runs} exist"
            source = re.sub(rf"\b{name}\b", runs[pick], source)
    return source


def test_the_cli_examples_run_as_written(tmp_path):
    """Every `./bin/daskweak …` line of README.md, in README order, in a fresh directory with small sizes."""
    env = small_environment(tmp_path)
    # `--env-file cluster.env`: a second settings file, as a user would have one.
    (tmp_path / "cluster.env").write_text("MAX_N_CORES=1\nSUITES=tasks\nRES_FILE_NAME=cluster\n")
    commands = as_written("./bin/daskweak ")
    assert {"plan", "run", "results", "report", "compare", "check"} <= {c.text.split()[1] for c in commands}
    for command in commands:
        source = fill_placeholders(from_this_checkout(command.source), run_ids(tmp_path / "results"))
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", source], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (
            f"README.md:{command.line}: `{command.text}` exited {done.returncode} (as `{source}`)\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n"
            "Fix the command or the code; if it needs a real cluster or service, mark it `# needs: …`.")
    runs = run_ids(tmp_path / "results")
    assert len(runs) >= 2
    results = tmp_path / "results"
    assert (results / "cluster_tasks.csv").exists()  # the run with --env-file cluster.env
    assert list(results.glob(f"daskweak_{runs[-1]}_observations.parquet"))
    assert (results / "reports" / runs[-1] / "report.html").exists()


def test_the_airflow_set_up_command_runs_the_benchmark(tmp_path):
    """`./bin/airflow dags test dask_weak_scaling` in a fresh Airflow home (migrated on first use), small sizes."""
    [command] = as_written("./bin/airflow dags test ")
    env = small_environment(tmp_path) | {"AIRFLOW_HOME": str(tmp_path / "airflow-home"), "SUITES": "tasks"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", from_this_checkout(command.source)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"`{command.text}`:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    [run_id] = run_ids(tmp_path / "results")
    from daskweak.store import ResultStore

    with ResultStore(f"sqlite:///{tmp_path / 'results' / 'daskweak.sqlite'}") as store:
        steps = store.steps(run_id)
        assert list(steps["cores_requested"]) == [1, 2] and set(steps["status"]) == {"ok"}
        assert store.runs().set_index("run_id").loc[run_id, "status"] == "ok"


@pytest.mark.parametrize("prefix", list(RUN_AS_WRITTEN))
def test_each_prefix_still_matches_a_readme_command(prefix):
    assert any(c.text.startswith(prefix) for c in readme_commands()), (
        f"RUN_AS_WRITTEN[{prefix!r}] matches no README.md command any more: remove it")
