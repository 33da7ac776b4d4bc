"""What publishing needs to know of each pipeline's shards: its tasks and how they group
into the Hub configs, what one input is, and how a record batch's rows are cut down to
some tasks.

FiFa-Instruct's rows are crops holding a list of samples (`samples[].task`); a family
config keeps a row with only its family's samples.  FaceInstruct's rows are samples (a
`task` column); each task is a config of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class HubLayout:
    pipeline: str
    title: str  # the dataset's name in messages and the card
    tasks: tuple[str, ...]
    families: dict[str, tuple[str, ...]]  # config -> its tasks (besides `default`, which has all)
    splits: tuple[str, ...]
    unit: str  # what one input is: the run report's `{unit}_written` / `{unit}_rejected`
    only_tasks: Callable  # (record batch, tasks) -> (the rows with those tasks only, samples kept)


def _samples_of_tasks(batch, tasks: tuple[str, ...]):
    """FiFa: the batch's image rows with only the samples of `tasks`, rows left with none
    dropped; and how many samples are kept."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    lists = batch.column("samples")
    flat = pc.list_flatten(lists)
    keep = pc.is_in(pc.struct_field(flat, "task"), value_set=pa.array(tasks))
    parents = pc.list_parent_indices(lists).filter(keep).to_numpy(zero_copy_only=False)
    counts = np.bincount(parents, minlength=batch.num_rows)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    kept = pa.ListArray.from_arrays(offsets, flat.filter(keep), type=lists.type)
    columns = [kept if name == "samples" else batch.column(name) for name in batch.schema.names]
    rows = pa.RecordBatch.from_arrays(columns, schema=batch.schema)
    return rows.filter(pa.array(counts > 0)), int(counts.sum())


def _rows_of_tasks(batch, tasks: tuple[str, ...]):
    """FaceInstruct: the rows whose `task` is one of `tasks` (a row is a sample)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = batch.filter(pc.is_in(batch.column("task"), value_set=pa.array(tasks)))
    return rows, rows.num_rows


def _fifa() -> HubLayout:
    from schemas.fifa import SPLITS, TASK_FAMILIES, TASKS

    return HubLayout("fifa_annotate", "FiFa-Instruct", TASKS, dict(TASK_FAMILIES), SPLITS, "pairs",
                     _samples_of_tasks)


def _faceinstruct() -> HubLayout:
    from schemas.faceinstruct import SPLITS, TASKS

    return HubLayout("faceinstruct_build", "FaceInstruct", TASKS, {t: (t,) for t in TASKS}, SPLITS, "items",
                     _rows_of_tasks)


LAYOUTS: dict[str, Callable[[], HubLayout]] = {"fifa_annotate": _fifa, "faceinstruct_build": _faceinstruct}


def layout_of(report: dict) -> HubLayout | None:
    """The layout of the pipeline that wrote a run report; None for an unknown one."""
    make = LAYOUTS.get(report.get("pipeline"))
    return make() if make else None
