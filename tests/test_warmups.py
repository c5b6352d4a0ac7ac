"""Warm-ups: a fraction of an observation's work on graphs of the same shape, recorded and left out."""

from __future__ import annotations

import math
import resource

import psutil
import pytest
from distributed import Client, LocalCluster

from daskweak.memory_warmup import footprint, warm_memory
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


def test_the_memory_warmed_before_a_measured_array_observation_is_its_share_of_input_and_result():
    [one, two] = make_plan(load_settings(max_n_cores=2, mem_per_node="64GB"))
    assert footprint(one, "arrays") == 2 * one.array_bytes // one.workers
    assert footprint(two, "arrays") == 2 * two.array_bytes // two.workers
    assert footprint(two, "dataframes") == footprint(two, "tasks") == 0  # not where the warm-up left a bias
    [tight] = make_plan(load_settings(max_n_cores=1, mem_per_node="200MB"))
    assert footprint(tight, "arrays") == tight.memory_per_node // 2  # never enough to make a worker spill


def test_warming_memory_makes_every_page_of_it_resident_on_every_worker():
    nbytes = 256 * 2**20  # far above a fresh worker's own memory, so its peak can only come from the warm-up
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        before = client.run(resident_bytes)
        warm_memory(client, nbytes)
        peaks = client.run(peak_resident_bytes)
    assert set(peaks) == set(before) and len(peaks) == 2
    for worker, peak in peaks.items():
        assert peak - before[worker] >= 0.95 * nbytes  # written, not only reserved: untouched pages are not resident


def resident_bytes() -> int:
    return psutil.Process().memory_info().rss


def peak_resident_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
