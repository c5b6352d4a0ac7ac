"""Warm-ups: a fraction of an observation's work on graphs of the same shape, recorded and left out."""

from __future__ import annotations

import math

import pytest

from daskweak.plan import WARMUP_WORK, make_plan, warmup_step
from daskweak.runner import run_sweep
from daskweak.settings import load_settings
from daskweak.store import ResultStore


@pytest.mark.parametrize("max_cores", [1, 2, 8, 16])
def test_a_warmup_step_keeps_the_chunk_and_partition_counts_on_a_sixteenth_of_the_data(max_cores):
    for step in make_plan(load_settings(max_n_cores=max_cores)):
        small = warmup_step(step)
        assert math.ceil(small.array_side / small.array_chunk) == math.ceil(step.array_side / step.array_chunk)
        assert small.dataframe_partitions == step.dataframe_partitions
        assert (small.cores, small.workers, small.index) == (step.cores, step.workers, step.index)
        assert small.array_bytes == pytest.approx(step.array_bytes * WARMUP_WORK, rel=0.01)
        assert small.dataframe_rows == pytest.approx(step.dataframe_rows * WARMUP_WORK, rel=0.01)
        assert small.tasks >= 4 * step.cores and small.tasks < step.tasks


def test_a_tiny_step_still_has_a_row_per_partition_and_an_element_per_block():
    [step] = make_plan(load_settings(max_n_cores=1, problem_size_array=16, problem_size_dataframes=1000,
                                     problem_size_tasks=10))
    small = warmup_step(step)
    assert small.dataframe_rows >= small.dataframe_partitions
    assert small.array_side >= math.ceil(step.array_side / step.array_chunk)


def test_warmups_run_every_operation_on_the_reduced_problem(small):
    settings = small(max_n_cores=2)
    result = run_sweep(settings)
    with ResultStore(settings.database_url) as store:
        rows = store.observations(result.run_id)
    assert result.status == "ok" and (rows["status"] == "ok").all()
    warm, measured = rows[rows["warmup"]], rows[~rows["warmup"]]
    key = ["cores_requested", "suite", "operation"]
    assert set(map(tuple, warm[key].to_numpy())) == set(map(tuple, measured[key].to_numpy()))
    sizes = measured.groupby(["cores_requested", "suite"])["problem_size"].first()
    for (cores, suite), size in warm.groupby(["cores_requested", "suite"])["problem_size"].first().items():
        assert size < sizes[cores, suite]
