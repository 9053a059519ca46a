"""Tasks on dask.distributed: a local cluster of processes, a running scheduler, or this process.

`run_tasks` is the one scale-out engine of physiotwin's batch jobs (a trial's arm x chunk
tasks, the calibration of many records): independent tasks, each writing its own result,
so that a rerun can skip what is done. A task's exception is re-raised by the driver
unless the task function turns it into a result (per-task failures that must not stop the
others)."""

from __future__ import annotations

import os
from typing import Callable, Sequence

__all__ = ["run_tasks"]


def run_tasks(fn: Callable, tasks: Sequence[tuple], *, workers: int | None = None, scheduler: str | None = None,
              done: Callable[[tuple, object], None] | None = None, name: str = "task") -> list:
    """Run ``fn(*task)`` for every task; results in task order.

    ``workers=0``: in this process, in order. Otherwise on the scheduler at ``scheduler`` or on
    a new ``LocalCluster`` of ``workers`` processes (default one per core) with one thread
    each. ``done(task, result)`` is called as each task finishes (progress, bookkeeping)."""
    if workers == 0:
        out = []
        for t in tasks:
            out.append(fn(*t))
            if done is not None:
                done(t, out[-1])
        return out
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is not None:
        client = Client(scheduler)
    else:
        n = workers or os.cpu_count() or 1
        cluster = LocalCluster(n_workers=min(n, max(1, len(tasks))), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        futures = [client.submit(fn, *t, key=f"{name}-{i}", pure=False) for i, t in enumerate(tasks)]
        index = {f.key: i for i, f in enumerate(futures)}
        out: list = [None] * len(tasks)
        for fut in as_completed(futures):
            i = index[fut.key]
            out[i] = fut.result()  # re-raises a task's error here
            if done is not None:
                done(tasks[i], out[i])
        return out
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


