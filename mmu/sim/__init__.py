"""The mock observatory: a drawn universe observed in the real survey file formats.

`simulate(out, galaxies, transients, seed)` writes Legacy Survey DR10 bricks and tractor
catalogs, DESI DR1 healpix coadds and redrock files, SDSS DR17 spec files, PLAsTiCC light-curve
CSVs and a truth catalog under `out`, plus `out/mmu-sim.json`. See docs/sim.md.
Importing this package is cheap: galsim, skypy and Dask load when a simulation runs.
"""
from mmu.sim.config import SIMULATOR_VERSION, SimConfig

__all__ = ["simulate", "SimConfig", "SIMULATOR_VERSION"]


def simulate(out, galaxies: int, transients: int, seed: int, footprint: str | None = None,
             workers: int | None = None, client=None, progress: bool = True, config: dict | None = None) -> dict:
    """Write a mock universe under `out` and return its manifest (`out/mmu-sim.json`).

    footprint: 'fields:N' (N small fields > 5 deg apart, default 'fields:auto'), or
    'uniform:RA0,RA1,DEC0,DEC1'. workers: 1 runs in-process; K > 1 starts a local Dask cluster of
    K processes; or pass a dask.distributed `client`. config: overrides of `SimConfig` fields.
    The output depends only on the arguments other than workers/client/progress.
    """
    from mmu.sim.driver import simulate as _simulate

    return _simulate(out, galaxies, transients, seed, footprint=footprint, workers=workers,
                     client=client, progress=progress, config=config)
