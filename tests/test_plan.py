"""The scaling plan: core counts, node packing and problem sizes, computed without any cluster."""

from __future__ import annotations

import math

import pytest

from daskweak.cli import main
from daskweak.plan import core_counts, make_plan, pack
from daskweak.settings import load_settings


@pytest.mark.parametrize(("max_cores", "step_by", "expected"), [
    (4, 1, [1, 2, 3, 4]),  # the origin measured 1 twice here
    (8, 2, [1, 2, 4, 6, 8]),
    (10, 4, [1, 4, 8]),
    (1, 1, [1]),
    (3, 5, [1]),
])
def test_core_counts_start_at_one_and_never_repeat(max_cores, step_by, expected):
    assert core_counts(max_cores, step_by) == expected


@pytest.mark.parametrize(("cores", "per_node", "layout"), [
    (1, 4, (1,)),
    (4, 4, (4,)),
    (5, 4, (3, 2)),
    (8, 4, (4, 4)),
    (9, 4, (3, 3, 3)),
    (2, 1, (1, 1)),
])
def test_nodes_are_filled_then_cores_split_evenly(cores, per_node, layout):
    assert pack(cores, per_node) == layout
    assert len(layout) == math.ceil(cores / per_node)
    assert sum(layout) == cores


def test_plan_records_layout_workers_and_threads():
    processes = make_plan(load_settings(max_n_cores=6, step_by=3, cores_per_node=4))
    assert [(s.cores, s.nodes, s.node_cores, s.workers, s.threads_per_worker) for s in processes] == [
        (1, 1, (1,), 1, 1), (3, 1, (3,), 3, 1), (6, 2, (3, 3), 6, 1),
    ]
    threads = make_plan(load_settings(max_n_cores=8, step_by=4, cores_per_node=4, worker_mode="threads"))
    assert [(s.workers, s.threads_per_worker) for s in threads] == [(1, 1), (1, 4), (2, 4)]


def test_weak_scaling_grows_work_with_cores_and_keeps_chunks_constant():
    steps = make_plan(load_settings(max_n_cores=16, step_by=4, problem_size_array=1000,
                                    problem_size_dataframes=10_000, problem_size_tasks=50))
    for step in steps:
        n = step.cores
        assert step.array_side == round(1000 * math.sqrt(n))
        assert step.array_side**2 / n == pytest.approx(1000**2, rel=0.01)  # elements per core constant
        assert step.dataframe_rows == 10_000 * n
        assert step.dataframe_rows / step.dataframe_partitions == 2_500  # rows per partition constant
        assert step.tasks == 50 * n
        assert step.array_chunk == pytest.approx(500, rel=0.1)  # chunk side constant
        assert (step.array_side / step.array_chunk) ** 2 >= 4 * n * 0.9  # about 4 chunks per core


def test_strong_scaling_keeps_the_problem_and_splits_it_finer():
    steps = make_plan(load_settings(max_n_cores=4, scaling="strong", problem_size_array=1000))
    assert {s.array_side for s in steps} == {1000}
    assert {s.dataframe_rows for s in steps} == {steps[0].dataframe_rows}
    chunks = [s.array_chunk for s in steps]
    assert chunks == sorted(chunks, reverse=True) and chunks[0] > chunks[-1]


def test_memory_per_node_is_carried_in_bytes():
    [step] = make_plan(load_settings(max_n_cores=1, mem_per_node="2GB"))
    assert step.memory_per_node == 2 * 10**9


def test_plan_command_prints_every_step_without_starting_anything(capsys):
    assert main(["plan", "--set", "MAX_N_CORES=6", "--set", "STEP_BY=2", "--set", "CORES_PER_NODE=4"]) == 0
    out = capsys.readouterr().out
    for cores, layout in [(1, "1"), (2, "2"), (4, "4"), (6, "3+3")]:
        assert any(f"│ {cores:>5} │" in line and f" {layout} " in line for line in out.splitlines()), out
    assert "data size" in out
