"""`mmu demo`: the whole chain on the embedded default, with a report to look at.

sim -> build every dataset -> crossmatch -> export -> pretrain -> eval with baselines -> submit
to a local git leaderboard -> render it -> report.html. One Dask client serves every stage;
each finished stage leaves a marker in OUT/stages/, so a rerun reuses finished stages and an
interrupted demo resumes (the build engine's own manifests make rebuilt stages no-ops too).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from mmu.hub import atomic_write_json

DATASETS = ("legacysurvey_dr10_south", "desi_dr1", "sdss_dr17", "plasticc_2018", "sim_truth_v1",
            "sim_truth_transients_v1")


@dataclass(frozen=True)
class DemoSize:
    name: str
    galaxies: int
    transients: int
    fields: int
    pretrain_config: str
    pretrain_steps: int
    budget_s: int


SIZES = {
    "tiny": DemoSize("tiny", 240, 40, 12, "demo", 20, 180),
    "small": DemoSize("small", 2000, 200, 120, "demo", 400, 900),
    "medium": DemoSize("medium", 20000, 2000, 400, "astroclip", 5000, 3 * 3600),
}


class Demo:
    def __init__(self, out: str | Path, size: str = "tiny", workers: int | None = None, seed: int = 1,
                 progress: bool = True, log: Callable = print):
        if size not in SIZES:
            raise ValueError(f"--size must be one of {sorted(SIZES)}, got {size!r}")
        self.out = Path(out).resolve()
        self.size = SIZES[size]
        self.workers = workers
        self.seed = seed
        self.progress = progress
        self.log = log
        self.raw, self.hub = self.out / "raw", self.out / "hub"
        self.stages_dir = self.out / "stages"
        self.times: dict[str, float] = {}
        self.client = None

    # ---------------------------------------------------------------------------------------
    def stage(self, name: str, fn: Callable[[], dict]) -> dict:
        marker = self.stages_dir / f"{name}.json"
        if marker.exists():
            done = json.loads(marker.read_text())
            if done.get("size") == self.size.name and done.get("seed") == self.seed:
                self.log(f"[demo] {name}: done earlier ({done['seconds']:.0f} s), reusing")
                self.times[name] = 0.0
                return done["result"]
        self.log(f"[demo] {name} ...")
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        self.times[name] = seconds
        self.stages_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, {"size": self.size.name, "seed": self.seed, "seconds": seconds,
                                   "result": result})
        self.log(f"[demo] {name}: {seconds:.1f} s")
        return result

    def sim(self) -> dict:
        from mmu.sim import simulate

        m = simulate(self.raw, galaxies=self.size.galaxies, transients=self.size.transients, seed=self.seed,
                     footprint=f"fields:{self.size.fields}", client=self.client, progress=self.progress)
        return {"counts": m["counts"]}

    def build_all(self) -> dict:
        from mmu.build import build

        out = {}
        for name in DATASETS:
            r = build(name, self.raw, self.hub, client=self.client, progress=self.progress, log=self._quiet)
            out[name] = {"rows": r.manifest["rows"], "content_revision": r.manifest["content_revision"],
                         "rejected_inputs": len(r.manifest["rejected_inputs"])}
        return out

    def crossmatch_all(self) -> dict:
        from mmu.crossmatch import crossmatch
        from mmu.hub import dataset_dir

        plans = {
            "demo_ls_desi": dict(names=["legacysurvey_dr10_south", "desi_dr1", "sim_truth_v1"]),
            "demo_sn_hosts": dict(names=["plasticc_2018", "legacysurvey_dr10_south", "sim_truth_v1"],
                                  method="host", radius_arcsec=10.0),
        }
        out = {}
        for name, plan in plans.items():
            names = plan.pop("names")
            overwrite = dataset_dir(self.hub, name).exists()
            r = crossmatch(names, self.hub, name, client=self.client, progress=self.progress,
                           overwrite=overwrite, log=self._quiet, **plan)
            out[name] = {"rows": r.manifest["rows"], "content_revision": r.manifest["content_revision"],
                         "match": r.manifest.get("match", {})}
        return out

    def export_all(self) -> dict:
        from mmu.export import export_wds

        out = {}
        for split in ("train", "val"):
            idx = export_wds("demo_ls_desi", self.hub, self.out / "shards" / split, split=split,
                             shard_size="32MB", shard_multiple=2, overwrite=True, client=self.client,
                             progress=self.progress, log=self._quiet)
            out[split] = {"samples": idx["samples"], "shards": len(idx["shards"])}
        return out

    def pretrain(self) -> dict:
        from mmu.pretrain.config import load_config
        from mmu.pretrain.train import run_training

        config = Path(__file__).resolve().parent.parent / "pretrain" / "configs" / f"{self.size.pretrain_config}.yaml"
        if not config.exists():  # installed wheel: configs ship inside mmu.pretrain
            import mmu.pretrain
            config = Path(mmu.pretrain.__file__).parent / "configs" / f"{self.size.pretrain_config}.yaml"
        shards = self.out / "shards"
        overrides = [f"data.train=[{shards / 'train'}]", f"data.val=[{shards / 'val'}]",
                     f"run.dir={self.out / 'runs' / self.size.pretrain_config}",
                     f"train.steps={self.size.pretrain_steps}", f"train.progress={str(self.progress).lower()}"]
        if self.size.name == "tiny":
            overrides += ["data.batch_size=8", "train.val_every=10", "train.ckpt_every=10", "data.segment_steps=10"]
        cfg = load_config(str(config), overrides)
        summary = run_training(cfg, resume=(self.out / "runs" / self.size.pretrain_config).exists())
        return {"checkpoint": summary.get("checkpoint"), "step": summary.get("step"),
                "loss": summary.get("last", {}).get("loss"), "val": summary.get("val")}

    def _quiet(self, *args):
        pass

    # ---------------------------------------------------------------------------------------
    def run(self) -> dict:
        from mmu.build import make_client

        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        self.client, cluster = make_client(self.workers, None)
        try:
            results = {
                "sim": self.stage("sim", self.sim),
                "build": self.stage("build", self.build_all),
                "crossmatch": self.stage("crossmatch", self.crossmatch_all),
                "export": self.stage("export", self.export_all),
            }
            results["pretrain"] = self.stage("pretrain", self.pretrain)
        finally:
            self.client.close()
            if cluster is not None:
                cluster.close()
        total = time.perf_counter() - t0
        summary = {"size": asdict(self.size), "seed": self.seed, "stages_s": self.times, "total_s": total,
                   "results": results}
        atomic_write_json(self.out / "demo.json", summary)
        self.log("")
        self.log("stage         seconds")
        for k, v in self.times.items():
            self.log(f"{k:<13} {v:7.1f}")
        self.log(f"{'total':<13} {total:7.1f}")
        return summary
