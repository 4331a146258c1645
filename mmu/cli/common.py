"""Options shared by several `mmu` commands."""
from __future__ import annotations

import argparse


def dask_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None, help="local Dask worker processes (default: up to 2)")
    p.add_argument("--scheduler", default=None,
                   help="address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                        "(a distributed or dask-jobqueue SLURM cluster)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
