"""The scaling plan: pure data describing every step before any cluster exists."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from daskweak.settings import Settings

CHUNKS_PER_CORE = 4
DATAFRAME_ROW_BYTES = 32  # four 8-byte columns: x, y (float64), k, j (int64)
# A warm-up pass does this share of a measured observation's work (see `warmup_step`).
WARMUP_WORK = 1 / 16


@dataclass(frozen=True)
class Step:
    """One core count of the sweep, its layout on nodes and the size of every suite's problem."""

    index: int
    cores: int
    nodes: int
    node_cores: tuple[int, ...]
    workers: int
    threads_per_worker: int
    memory_per_node: int | None
    array_side: int
    array_chunk: int
    dataframe_rows: int
    dataframe_partitions: int
    tasks: int

    @property
    def array_bytes(self) -> int:
        return self.array_side**2 * 8

    @property
    def dataframe_bytes(self) -> int:
        return self.dataframe_rows * DATAFRAME_ROW_BYTES

    def as_dict(self) -> dict:
        return asdict(self) | {"node_cores": list(self.node_cores)}

    @classmethod
    def from_dict(cls, data: dict) -> Step:
        return cls(**(data | {"node_cores": tuple(data["node_cores"])}))


def core_counts(max_cores: int, step_by: int) -> list[int]:
    """1, STEP_BY, 2·STEP_BY, … ≤ max_cores, each once (the origin ran 1 core twice when STEP_BY=1)."""
    return sorted({1, *range(step_by, max_cores + 1, step_by)})


def pack(cores: int, per_node: int) -> tuple[int, ...]:
    """Fill nodes in order: ceil(cores / per_node) nodes, the cores split as evenly as possible."""
    nodes = math.ceil(cores / per_node)
    base, extra = divmod(cores, nodes)
    return tuple(base + 1 if i < extra else base for i in range(nodes))


def make_plan(settings: Settings) -> list[Step]:
    """Every step of the sweep.

    Sizing rule: under weak scaling the work per core is constant — the array side grows by √cores
    (so its N² elements grow by cores) and the dataframe rows and task counts grow by cores; under strong
    scaling the problem stays at its 1-core size. Chunking targets CHUNKS_PER_CORE chunks per core in both
    modes: the array is cut into ⌈2·√cores⌉² square chunks and the dataframe into 4·cores partitions. Under
    weak scaling every chunk therefore holds the same amount of data at every step, so each task does the
    same work and only the number of tasks grows with the cores.
    """
    weak = settings.scaling == "weak"
    steps = []
    for index, cores in enumerate(core_counts(settings.max_n_cores, settings.step_by)):
        layout = pack(cores, settings.node_cores)
        growth = cores if weak else 1
        side = round(settings.problem_size_array * math.sqrt(growth))
        blocks_per_side = math.ceil(math.sqrt(CHUNKS_PER_CORE * cores))
        processes = settings.worker_mode == "processes"
        steps.append(Step(
            index=index,
            cores=cores,
            nodes=len(layout),
            node_cores=layout,
            workers=cores if processes else len(layout),
            threads_per_worker=1 if processes else max(layout),
            memory_per_node=settings.mem_per_node_bytes,
            array_side=side,
            array_chunk=math.ceil(side / blocks_per_side),
            dataframe_rows=settings.problem_size_dataframes * growth,
            dataframe_partitions=CHUNKS_PER_CORE * cores,
            tasks=settings.problem_size_tasks * growth,
        ))
    return steps


def warmup_step(step: Step, work: float = WARMUP_WORK) -> Step:
    """The step shrunk to `work` of its data and tasks, with the same chunk and partition counts.

    What a warm-up must warm is the same at any size: imports and first calls on the workers (NumPy, pandas,
    Dask's code paths), the scheduler's and the client's handling of a graph of the same shape. The same
    number of chunks and partitions gives the same graphs; only the bytes in each shrink, so a warm-up costs
    a fraction of an observation (large chunks are fresh allocations from the OS either way: there is no
    worker memory pool a full-size pass would fill)."""
    blocks_per_side = math.ceil(step.array_side / step.array_chunk)
    side = max(blocks_per_side, round(step.array_side * math.sqrt(work)))
    return replace(
        step,
        array_side=side,
        array_chunk=math.ceil(side / blocks_per_side),
        dataframe_rows=max(step.dataframe_partitions, round(step.dataframe_rows * work)),
        tasks=max(4 * step.cores, round(step.tasks * work)),
    )
