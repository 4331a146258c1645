"""The Dask side of every parallel command: one way to get a client, and progress over futures.

`mmu build`, `mmu crossmatch`, `mmu export-wds` and `mmu demo` all either run on a cluster the
user started (`--scheduler tcp://host:8786`) or start a private `LocalCluster` of worker
processes for the duration of the command. `dask_client` is that choice, as a context manager
that closes only what it started.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress

# Dask's own loggers: silenced in worker processes, and in this process while a cluster closes
_DASK_LOGGERS = ("distributed", "tornado", "asyncio", "bokeh")


def _worker_log_level() -> int:
    """The `distributed` log level of the worker processes of a private cluster: nothing below
    CRITICAL (a task's failure reaches the command through its future, and teardown races such as
    a heartbeat to a scheduler that is closing are noise), unless ``-v`` asked for debug output."""
    from mmu.logs import get_verbosity

    return logging.WARNING if get_verbosity() <= logging.DEBUG else logging.CRITICAL


# glibc's mmap threshold for worker processes (bytes). Dask's nanny starts every worker with
# MALLOC_TRIM_THRESHOLD_=65536 (distributed.nanny.pre-spawn-environ: give freed memory back to
# the OS), and a fixed trim threshold also turns off glibc's adaptive mmap threshold: every
# allocation of 128 KiB or more (FITS HDUs, spectra and pixel arrays, their temporaries) is then
# a fresh mmap, page-faulted and zeroed by the kernel, and unmapped when freed. Fixing the mmap
# threshold keeps such buffers in the heap, where they are reused; the top of the heap is still
# trimmed past 64 KiB. `mmu build desi_dr1 --workers 1`, 3,004 spectra: the worker's CPU 13.3 ->
# 10.3 s (system time 5.6 -> 3.1 s), wall 13.3 -> 10.5 s, peak RSS 826 -> 844 MB (docs/scale.md).
WORKER_MMAP_THRESHOLD = 16 * 2**20


def worker_environ() -> dict:
    """The environment Dask's nanny sets before it starts a worker process: Dask's own
    (``distributed.nanny.pre-spawn-environ``) plus `WORKER_MMAP_THRESHOLD`, unless the user set
    ``MALLOC_MMAP_THRESHOLD_`` (in the environment or in that Dask setting)."""
    import dask

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    if "MALLOC_MMAP_THRESHOLD_" not in env and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        env["MALLOC_MMAP_THRESHOLD_"] = WORKER_MMAP_THRESHOLD
    return env


def make_client(workers: int | None = None, scheduler: str | None = None, *, processes: bool = True):
    """A Dask client and the cluster it owns.

    Args:
        workers: local workers when no scheduler is given (processes with one thread each, or
            threads of this process); default: up to 2, at most the machine's cores.
        scheduler: address of a running Dask scheduler, e.g. ``tcp://10.0.0.5:8786``.
        processes: worker processes (the default), or threads of this process: no worker start-up
            and no imports repeated per worker, for small jobs (see `local_workers`).

    Returns:
        ``(client, cluster)``; ``cluster`` is None when connected to an existing scheduler.
    """
    import dask
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout="30s"), None
    n = workers or max(1, min(2, os.cpu_count() or 1))
    if processes:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ()}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", silence_logs=_worker_log_level())
    else:
        cluster = LocalCluster(n_workers=1, threads_per_worker=n, processes=False,
                               dashboard_address=None, silence_logs=_worker_log_level())
    return Client(cluster), cluster


def local_workers(raw_bytes: int, workers: int | None, threads_below: int = 2 * 2**30) -> bool:
    """Whether a private cluster should use worker processes: yes when the user asked for a
    number of workers or the raw input is at least `threads_below` bytes; a smaller job runs on
    threads of the command's own process (starting and importing into worker processes costs more
    than such a job)."""
    return workers is not None or raw_bytes >= threads_below


@contextmanager
def quiet_dask_logs(level: int = logging.CRITICAL) -> Iterator[None]:
    """Raise Dask's loggers in this process to `level` inside the block (then restore them)."""
    saved = {name: logging.getLogger(name).level for name in _DASK_LOGGERS}
    for name in _DASK_LOGGERS:
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, lvl in saved.items():
            logging.getLogger(name).setLevel(lvl)


def close_client(client, cluster) -> None:
    """Close `client`, then the `cluster` it owns (workers before the scheduler), quietly.

    A closing cluster's components log connection errors that mean nothing to the user (a worker's
    heartbeat to a scheduler that is going away: "Stream is closed"); they are silenced here and in
    the worker processes (`make_client`), and the closes wait long enough for a loaded machine."""
    with quiet_dask_logs():
        try:
            client.close(timeout=60)
        except Exception:  # noqa: BLE001 - closing: the command's outcome is already decided
            pass
        if cluster is not None:
            with suppress(Exception):
                cluster.close(timeout=120)


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, client=None, *,
                processes: bool = True) -> Iterator:
    """Yield `client` if given, else a new one from `make_client`, closed (with its cluster) on exit.

    Example:
        >>> with dask_client(workers=2) as client:      # doctest: +SKIP
        ...     client.gather(client.map(abs, [-1, -2]))
    """
    if client is not None:
        yield client
        return
    client, cluster = make_client(workers, scheduler, processes=processes)
    try:
        yield client
    finally:
        close_client(client, cluster)


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
