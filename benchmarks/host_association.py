"""How often transient-host association finds the true host, on the mock universe.

    python benchmarks/host_association.py --galaxies 1000 --transients 300 --seed 3 --work /tmp/mmu-bench-host

Builds plasticc_2018, legacysurvey_dr10_south and sim_truth_v1 from `mmu sim` output, then
associates every transient with a Legacy Survey galaxy by directional light radius
(`--method host`) and, for comparison, by nearest neighbour within 1" and 3". Each association
is chained to the truth catalogue at the host's position, and compared with the simulator's
true host (`sim_truth/transients.parquet` -> host_galaxy_id). Transients without a host galaxy
(stellar variables) count as correct when left unassociated.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq


def score(hub: Path, name: str, truth: pd.DataFrame, in_catalog: set) -> dict:
    t = pq.read_table(hub / name / name / "dataset").to_pandas()
    got = dict(zip(t["plasticc_object_id"].astype(str), t["sim_truth_galaxy_id"]))
    hosted = truth[truth["host_galaxy_id"].notna()]
    unhosted = truth[truth["host_galaxy_id"].isna()]
    correct = sum(str(o) in got and got[str(o)] == h for o, h in zip(hosted["object_id"], hosted["host_galaxy_id"]))
    wrong = sum(str(o) in got and got[str(o)] != h for o, h in zip(hosted["object_id"], hosted["host_galaxy_id"]))
    false_hosts = sum(str(o) in got for o in unhosted["object_id"])
    findable = hosted[hosted["host_galaxy_id"].isin(in_catalog)]
    found = sum(str(o) in got and got[str(o)] == h for o, h in zip(findable["object_id"], findable["host_galaxy_id"]))
    return {"hosted": int(len(hosted)), "host_in_legacysurvey_catalog": int(len(findable)),
            "true_host_fraction_of_findable": round(found / max(1, len(findable)), 3),
            "true_host": int(correct), "wrong_host": int(wrong),
            "no_host_found": int(len(hosted) - correct - wrong),
            "true_host_fraction": round(correct / max(1, len(hosted)), 3),
            "hostless": int(len(unhosted)), "hostless_given_a_host": int(false_hosts)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--galaxies", type=int, default=1000)
    p.add_argument("--transients", type=int, default=300)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--work", default="/tmp/mmu-bench-host")
    args = p.parse_args()

    from mmu.engine.build import build, make_client
    from mmu.pairing.crossmatch import crossmatch
    from mmu.sim import simulate

    work = Path(args.work)
    raw, hub = work / "raw", work / "hub"
    if not (raw / "mmu-sim.json").exists():
        simulate(raw, galaxies=args.galaxies, transients=args.transients, seed=args.seed, progress=False)
    client, cluster = make_client(args.workers)
    quiet = dict(client=client)
    try:
        for name in ("plasticc_2018", "legacysurvey_dr10_south", "sim_truth_v1"):
            build(name, raw, hub, **quiet)
        chain = ["plasticc_2018", "legacysurvey_dr10_south", "sim_truth_v1"]
        runs = {"host_dlr": dict(method="host", radius_arcsec=10.0),
                "nearest_1arcsec": dict(radius_arcsec=1.0), "nearest_3arcsec": dict(radius_arcsec=3.0)}
        for name, kw in runs.items():
            crossmatch(chain, hub, f"bench_{name}", overwrite=True, **kw, **quiet)
    finally:
        client.close()
        cluster.close()
    truth = pd.read_parquet(raw / "sim_truth" / "transients.parquet")
    truth["host_galaxy_id"] = truth["host_galaxy_id"].astype("Int64")
    gal = pd.read_parquet(raw / "sim_truth" / "galaxies.parquet", columns=["galaxy_id", "ls_n_catalog_rows"])
    in_catalog = set(gal.loc[gal["ls_n_catalog_rows"] > 0, "galaxy_id"].astype(int))
    report = {name: score(hub, f"bench_{name}", truth, in_catalog) for name in runs}
    report["offsets_arcsec"] = {q: round(float(np.nanpercentile(truth["offset_arcsec"], q)), 2)
                                for q in (50, 63, 90, 94)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
