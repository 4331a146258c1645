"""How hard is photo-z on the mock? kNN(16) and ridge R^2 from observed photometry to redshift.

Simulates a universe (or reads an existing RAW folder) and reports 5-fold cross-validated R^2 from
the tractor catalogue's g-r, r-i, i-z colours and r magnitude (observed, with their noise) to the
DESI redrock redshift of the spectroscopic sample, its r < 19.5 part, and to the true redshift of
all galaxies with r < 23. `--ablate` repeats the run with the realism ingredients switched off.

    python benchmarks/sim_photoz_realism.py --galaxies 3000 --seed 0 --workers 2
    python benchmarks/sim_photoz_realism.py --raw RAW          # an existing simulation
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REALISM_OFF = {"av_sf_at_1e10": 0.0, "av_sf_slope": 0.0, "av_sf_scatter": 0.0, "av_q_scatter": 0.0,
               "line_scatter_dex": 0.0, "sed_tilt_mag": 0.0, "zeropoint_rms_mag": 0.0, "blend_leak": 0.0}


def run_one(galaxies, seed, workers, config, keep=None):
    from mmu.sim import simulate
    from mmu.sim.realism import photoz_realism

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(keep) if keep else Path(tmp) / "raw"
        t0 = time.perf_counter()
        simulate(raw, galaxies, 0, seed, workers=workers, progress=False, config=config)
        wall = time.perf_counter() - t0
        return {"simulate_seconds": round(wall, 1), **photoz_realism(raw)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw", help="evaluate an existing simulation instead of running one")
    p.add_argument("--galaxies", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ablate", action="store_true", help="also run with every realism ingredient off")
    args = p.parse_args(argv)
    if args.raw:
        from mmu.sim.realism import photoz_realism

        report = {"raw": args.raw, **photoz_realism(Path(args.raw))}
    else:
        report = {"galaxies": args.galaxies, "seed": args.seed, "default": run_one(args.galaxies, args.seed,
                                                                                   args.workers, None)}
        if args.ablate:
            report["realism_off"] = run_one(args.galaxies, args.seed, args.workers, REALISM_OFF)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
