"""The Dask side of every parallel command: one way to get a client, and progress over futures.

`mmu build`, `mmu crossmatch`, `mmu export-wds` and `mmu demo` all either run on a cluster the
user started (`--scheduler tcp://host:8786`) or start a private `LocalCluster` of worker
processes for the duration of the command. `dask_client` is that choice, as a context manager
that closes only what it started.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def make_client(workers: int | None = None, scheduler: str | None = None):
    """A Dask client and the cluster it owns.

    Args:
        workers: local worker processes (one thread each) when no scheduler is given;
            default: up to 2, at most the machine's cores.
        scheduler: address of a running Dask scheduler, e.g. ``tcp://10.0.0.5:8786``.

    Returns:
        ``(client, cluster)``; ``cluster`` is None when connected to an existing scheduler.
    """
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout="30s"), None
    n = workers or max(1, min(2, os.cpu_count() or 1))
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=40)
    return Client(cluster), cluster


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, client=None) -> Iterator:
    """Yield `client` if given, else a new one from `make_client`, closed (with its cluster) on exit.

    Example:
        >>> with dask_client(workers=2) as client:      # doctest: +SKIP
        ...     client.gather(client.map(abs, [-1, -2]))
    """
    if client is not None:
        yield client
        return
    client, cluster = make_client(workers, scheduler)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


class Progress:
    """A `mmu.logs.tqdm` bar over finished tasks; silent when progress bars are off.

    Args:
        total: number of tasks.
        desc: the bar's label, e.g. ``"desi_dr1: standardize"``.
        unit: what one task is ("input", "shard").

    Example:
        >>> bar = Progress(3, "demo: standardize")      # doctest: +SKIP
        >>> for _ in range(3):  # doctest: +SKIP
        ...     bar.update()
        >>> bar.close()  # doctest: +SKIP
    """

    def __init__(self, total: int, desc: str, unit: str = "input"):
        from mmu.logs import tqdm

        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=True)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()
