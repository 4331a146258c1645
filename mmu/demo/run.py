"""`mmu demo`: the whole chain on the embedded default, with a report to look at.

sim -> build every dataset -> crossmatch -> export -> pretrain -> eval (against a random-weight
encoder of the same architecture, on a local task overlay pinned to this run's builds) -> submit
to a local git leaderboard -> render it -> OUT/report.html. One Dask client serves every stage;
each finished stage leaves a marker in OUT/stages/, so a rerun reuses finished stages and an
interrupted demo resumes (the build engine's own manifests make rebuilt stages no-ops too).
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import mmu.logs
from mmu.hub.layout import atomic_write_json

log = logging.getLogger(__name__)

# The demo observes its universe with a far deeper DESI than the real survey: a complete bright-time
# selection to r < 21 / 23 with no fibre-magnitude cut (instead of 19.5 / 20.175 and r_fib < 21.5),
# exposed 10x longer (as DESI's deep SV fields were), so that a 2,000-galaxy run yields enough
# image-spectrum pairs with informative spectra for contrastive training. The benchmark's
# canonical mock keeps the survey's selection and depth.
DEMO_SIM = {"bgs_r_limit": 21.0, "bgs_faint_r_limit": 23.0, "bgs_faint_rfib_limit": 99.0,
            "desi_completeness": 1.0, "desi_efftime_factor": 10.0}
PAIRS = "mock_ls_desi_v1"  # Legacy Survey x DESI x truth: training pairs and the spectrum tasks
# the survey-label tasks (DESI's own redshifts, no simulator truth) run next to the mock ones; the
# image one reads the Legacy Survey x DESI pair made without the truth (`SURVEY_PAIRS`)
EVAL_TASKS = ("MockRedshiftImage.v1", "MockLogMassImage.v1", "MockRedshiftSpectrum.v1",
              "MockRetrievalImageSpectrum.v1", "LegacySurveyDESIRedshift.v1", "DESIRedshiftSpectrum.v1")
SURVEY_PAIRS = "ls_dr10_desi_dr1"  # Legacy Survey x DESI alone: the survey-label tasks' paired catalog
BASELINES = ("random-weights", "raw-pca", "supervised")
MARGIN_GAIN = 0.10  # the image-redshift R² gain over random weights a `small` demo must show
BOARD_TITLE = "mmu demo leaderboard (demo run, not comparable with the public board)"
DATASETS = ("legacysurvey_dr10_south", "desi_dr1", "sdss_dr17", "plasticc_2018", "sim_truth_v1",
            "sim_truth_transients_v1")
# the library steps whose per-step info lines the demo replaces with one line per stage (their
# warnings stay; -v shows everything)
QUIETED = ("mmu.engine", "mmu.builders", "mmu.hub", "mmu.pairing", "mmu.shards", "mmu.eval")


@contextlib.contextmanager
def quiet_steps(names: tuple[str, ...] = QUIETED):
    """Within the block, the loggers `names` show warnings and errors only, unless mmu's
    verbosity is debug (``-v``)."""
    if mmu.logs.get_verbosity() <= logging.DEBUG:
        yield
        return
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=False):
            lg.setLevel(level)


def demo_name(task: str) -> str:
    """The demo's local copy of a benchmark task: MockX.v1 -> DemoX.v1, a survey-label task
    X.v1 -> DemoX.v1.

    Example:
        >>> demo_name("MockRedshiftImage.v1")
        'DemoRedshiftImage.v1'
        >>> demo_name("LegacySurveyDESIRedshift.v1")
        'DemoLegacySurveyDESIRedshift.v1'
    """
    return "Demo" + task.removeprefix("Mock")


@dataclass(frozen=True)
class DemoSize:
    """One demo size: how many objects and fields to simulate, how long to pretrain (which
    config, how many steps, other settings of the config it changes), the supervised baseline's
    epochs and a time budget in seconds (on the machine the size is meant for)."""

    name: str
    galaxies: int
    transients: int
    fields: int  # at most `mmu.sim.footprint.MAX_FIELDS`
    pretrain_config: str
    pretrain_steps: int
    supervised_epochs: int
    budget_s: int
    pretrain_set: tuple[str, ...] = ()  # config overrides, as `mmu pretrain --set` takes them


STAGES = ("sim", "build", "crossmatch", "export", "pretrain", "eval")  # in order; the report follows eval

SIZES = {
    "tiny": DemoSize("tiny", 240, 40, 12, "demo", 20, 1, 180,
                     ("data.batch_size=8", "train.val_every=10", "train.ckpt_every=10", "data.segment_steps=10")),
    "small": DemoSize("small", 2000, 200, 120, "demo", 400, 4, 900),
    # one H100 machine (16 cores): the astroclip config for 1,500 of its 50,000 steps (~28 passes
    # over ~14,000 training pairs), its warm-up scaled down with them; 10 minutes end to end
    "medium": DemoSize("medium", 20000, 2000, 300, "astroclip", 1500, 10, 600,
                       ("optim.warmup_steps=150", "train.val_every=500", "train.ckpt_every=500")),
}


class Demo:
    """The whole chain on a mock universe, stage by stage, into one output folder.

    Progress bars follow mmu's switch (`mmu.logs.disable_progress_bars`, ``--no-progress``);
    each stage logs one line as it starts and ends (logger ``mmu.demo.run``), the library steps
    inside it only their warnings (`quiet_steps`).

    Args:
        out: the output folder (raw/, hub/, shards/, runs/, results/, leaderboard/, site/,
            report.html, demo.json, stages/).
        size: "tiny", "small" or "medium" (`SIZES`).
        workers: local Dask worker processes (default: Dask's choice).
        seed: the simulation seed.

    Raises:
        ValueError: an unknown size.

    Example:
        >>> summary = Demo("demo", "tiny").run()  # doctest: +SKIP
        >>> print(stage_table(summary))  # doctest: +SKIP
    """

    def __init__(self, out: str | Path, size: str = "tiny", workers: int | None = None, seed: int = 1):
        if size not in SIZES:
            raise ValueError(f"--size must be one of {sorted(SIZES)}, got {size!r}")
        self.out = Path(out).resolve()
        self.size = SIZES[size]
        self.workers = workers
        self.seed = seed
        self.raw, self.hub = self.out / "raw", self.out / "hub"
        self.stages_dir = self.out / "stages"
        self.times: dict[str, float] = {}  # seconds per stage (of the run that did it)
        self.reused: list[str] = []
        self.client = None

    # ---------------------------------------------------------------------------------------
    def stage(self, name: str, fn: Callable[[], dict]) -> dict:
        """Run stage `name` (`fn`), or reuse its result from an earlier run of the same size and
        seed (OUT/stages/NAME.json); its time goes into the stage table either way."""
        marker = self.stages_dir / f"{name}.json"
        if marker.exists():
            done = json.loads(marker.read_text())
            if done.get("size") == self.size.name and done.get("seed") == self.seed:
                log.info("[demo] %s: done earlier (%.0f s), reusing", name, done["seconds"])
                self.times[name] = done["seconds"]
                self.reused.append(name)
                return done["result"]
        where = f"stage {STAGES.index(name) + 1} of {len(STAGES)}" if name in STAGES else "extra stage"
        so_far = sum(self.times.values())
        log.info("[demo] %s ... (%s%s)", name, where, f"; {so_far:.0f} s in the stages before" if so_far else "")
        t0 = time.perf_counter()
        with quiet_steps():
            result = fn()
        seconds = time.perf_counter() - t0
        self.times[name] = seconds
        self.stages_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, {"size": self.size.name, "seed": self.seed, "seconds": seconds,
                                   "result": result})
        log.info("[demo] %s: %.1f s", name, seconds)
        return result

    def sim(self) -> dict:
        """Stage: the mock universe in the real survey formats (OUT/raw)."""
        from mmu.sim import simulate

        m = simulate(self.raw, galaxies=self.size.galaxies, transients=self.size.transients, seed=self.seed,
                     footprint=f"fields:{self.size.fields}", client=self.client,
                     progress=mmu.logs.progress_bars_enabled(),
                     config=dict(DEMO_SIM))
        return {"counts": m["counts"]}

    def build_all(self) -> dict:
        """Stage: every dataset of `DATASETS` built into OUT/hub."""
        from mmu.engine.build import build

        out = {}
        for name in DATASETS:
            r = build(name, self.raw, self.hub, client=self.client)
            out[name] = {"rows": r.manifest.rows.model_dump(), "content_revision": r.manifest.content_revision,
                         "rejected_inputs": len(r.manifest.rejected_inputs)}
        return out

    def crossmatch_all(self) -> dict:
        """Stage: the paired catalogs the demo tasks read (Legacy Survey x DESI x truth,
        Legacy Survey x truth, Legacy Survey x DESI alone for the survey-label tasks, PLAsTiCC x
        host galaxies)."""
        from mmu.hub.layout import dataset_dir
        from mmu.pairing.crossmatch import crossmatch

        # the paired catalogs the mock benchmark tasks read (catalog.yaml `tasks:` -> paired.name)
        plans = {
            PAIRS: dict(names=["legacysurvey_dr10_south", "desi_dr1", "sim_truth_v1"]),
            "mock_ls_truth_v1": dict(names=["legacysurvey_dr10_south", "sim_truth_v1"]),
            SURVEY_PAIRS: dict(names=["legacysurvey_dr10_south", "desi_dr1"]),
            "demo_sn_hosts": dict(names=["plasticc_2018", "legacysurvey_dr10_south", "sim_truth_v1"],
                                  method="host", radius_arcsec=10.0),
        }
        out = {}
        for name, plan in plans.items():
            names = plan.pop("names")
            overwrite = dataset_dir(self.hub, name).exists()
            r = crossmatch(names, self.hub, name, client=self.client, overwrite=overwrite, **plan)
            out[name] = {"rows": r.manifest.rows.model_dump(), "content_revision": r.manifest.content_revision,
                         "match": r.manifest.match or {}}
        return out

    def export_all(self) -> dict:
        """Stage: WebDataset shards of the image-spectrum pairs (train, val) in OUT/shards."""
        from mmu.shards.export import export_wds

        out = {}
        for split in ("train", "val"):
            idx = export_wds(PAIRS, self.hub, self.out / "shards" / split, split=split,
                             shard_size="32MiB", shard_multiple=2, overwrite=True, client=self.client)
            out[split] = {"samples": idx.samples, "shards": len(idx.shards)}
        return out

    def pretrain_config(self):
        """The size's pretraining config, pointed at this run's shards and run folder."""
        from mmu.pretrain.config import load_config

        config = Path(__file__).resolve().parents[2] / "pretrain" / "configs" / f"{self.size.pretrain_config}.yaml"
        if not config.exists():  # installed wheel: configs ship inside mmu.pretrain
            from mmu import pretrain as pretrain_package  # not `import mmu.pretrain`: `mmu` would turn local

            config = Path(pretrain_package.__file__).parent / "configs" / f"{self.size.pretrain_config}.yaml"
        shards = self.out / "shards"
        overrides = [f"data.train=[{shards / 'train'}]", f"data.val=[{shards / 'val'}]",
                     f"run.dir={self.out / 'runs' / self.size.pretrain_config}",
                     f"train.steps={self.size.pretrain_steps}",
                     f"train.progress={str(mmu.logs.progress_bars_enabled()).lower()}"]
        return load_config(str(config), overrides + list(self.size.pretrain_set))

    def pretrain(self) -> dict:
        """Stage: CLIP-style pretraining on the shards (resumed when OUT/runs has a run)."""
        from mmu.pretrain.train import run_training

        cfg = self.pretrain_config()
        summary = run_training(cfg, resume=(self.out / "runs" / self.size.pretrain_config).exists())
        return {"checkpoint": summary.get("checkpoint"), "step": summary.get("step"),
                "loss": summary.get("last", {}).get("loss"), "val": summary.get("val")}

    def task_overlay(self) -> Path:
        """The demo's tasks: the mock benchmark's, renamed `Demo*.vN`, pinned to this run's own
        builds (content revisions, a lock file in OUT) and with minimum counts scaled to its size.
        Results on them are local: never comparable with the public board."""
        import yaml

        from mmu.hub.layout import read_manifest
        from mmu.registry.catalog import load_catalog

        cat = load_catalog()
        lock = {"benchmark": f"demo-{self.size.name}", "datasets": {}}
        tasks = []
        for name in EVAL_TASKS:
            t = cat.task(name).model_dump(mode="json")
            hub_name = t["paired"]["name"] if t.get("paired") else t["dataset"]
            m = read_manifest(self.hub, hub_name)
            lock["datasets"][hub_name] = {"content_revision": m.content_revision, "rows": m.rows.model_dump(),
                                          "mock": bool(m.mock)}
            t.update(name=demo_name(name), dataset_revision=m.content_revision,
                     description=f"[demo {self.size.name}, local] {t.get('description', '')}",
                     min_per_split={"train": 10, "val": 1, "test": 3},
                     sim={"seed": self.seed, "galaxies": self.size.galaxies, "transients": self.size.transients,
                          "footprint": f"fields:{self.size.fields}"},
                     lock=str(self.out / "demo.lock"))
            tasks.append({k: v for k, v in t.items() if v is not None})
        atomic_write_json(self.out / "demo.lock", lock)
        path = self.out / "demo-tasks.yaml"
        path.write_text(yaml.safe_dump({"tasks": tasks}, sort_keys=False))
        return path

    def _pin_tasks(self, names: list[str]) -> None:
        """Add the id sets and test labels of each demo task, and each dataset's build (mock or
        not, its inputs' revisions), to demo.lock (as a lock pins them), so a submission to the
        demo board is checked the same way."""
        from mmu.eval.submit import lock_entries
        from mmu.registry.catalog import load_catalog

        lock_path = self.out / "demo.lock"
        cat = load_catalog()
        lock = json.loads(lock_path.read_text())
        entries = lock_entries(self.hub, [cat.task(n) for n in names])
        lock["tasks"] = entries["tasks"]
        for name, ds in entries["datasets"].items():  # whether each build is mock, its inputs' revisions
            lock["datasets"].setdefault(name, {}).update(ds)
        atomic_write_json(lock_path, lock)

    def evaluate(self, checkpoint: str) -> dict:
        """The pretrained model and the three baselines (random weights of the same architecture,
        PCA of the raw inputs, a supervised encoder per modality) on the demo tasks (linear.v1;
        retrieval.v1 for the cross-modal task), then the margin of the pretrained image embedding
        over random weights on redshift with a paired-bootstrap interval, then the local board."""
        from mmu.registry.catalog import active_overlays

        overlay = self.task_overlay()
        with active_overlays(overlay):
            return self._evaluate(checkpoint)

    def _evaluate(self, checkpoint: str) -> dict:
        from mmu.eval.baselines import run_baselines
        from mmu.eval.embed import CheckpointEmbedder
        from mmu.eval.run import model_block, run_tasks

        names = [demo_name(n) for n in EVAL_TASKS]
        self._pin_tasks(names)
        results_dir = self.out / "results"
        protocols = ["linear.v1", "retrieval.v1"]
        emb = CheckpointEmbedder(checkpoint)
        ours = run_tasks(emb, self.hub, results_dir / "pretrained", model=model_block(emb, name="demo-pretrained"),
                         task_names=names, protocol_names=protocols, cache_dir=self.out / "cache")
        cfg = emb.p.config
        base = run_baselines(cfg, self.hub, results_dir, kinds=BASELINES, task_names=names,
                             cache_dir=self.out / "cache", supervised_epochs=self.size.supervised_epochs,
                             protocol_names=protocols)
        # the maintainer's re-run that a baseline needs to enter a board (`--verified-by`),
        # from scratch: no embedding cache
        run_baselines(cfg, self.hub, self.out / "results-rerun", kinds=BASELINES, task_names=names,
                      cache_dir=None, supervised_epochs=self.size.supervised_epochs,
                      protocol_names=protocols)
        board = self.leaderboard(results_dir, names)
        rows = {}
        for label, results in (("pretrained", ours), *((k, base.get(k, [])) for k in BASELINES)):
            for r in results:
                rows.setdefault(r["task"]["name"], {})[label] = {
                    "protocol": r["protocol"]["name"], "main_score": r["main_score"]["name"],
                    "value": r["main_score"]["value"], "n_test": r["splits"]["test"]["count"],
                    "comparable": r["comparable"],
                    "labels": "simulator truth" if r["task"]["mock"] else "survey (DESI)"}
        return {"results_dir": str(results_dir), "tasks": rows, "leaderboard": board,
                "margin": self.margin(ours, base.get("random-weights", []))}

    def margin(self, ours: list[dict], random: list[dict]) -> dict:
        """Redshift from images: the pretrained embedding's linear-probe R² minus the random-weight
        encoder's, on the same test objects, with a paired-bootstrap 95% interval."""
        from mmu.eval.metrics import paired_bootstrap

        task = demo_name("MockRedshiftImage.v1")

        def preds(results):
            for r in results:
                if r["task"]["name"] == task and r["protocol"]["name"] == "linear.v1":
                    p = r["predictions"]
                    return dict(zip(p["ids"], zip(p["y"], p["fits"]["main"]["pred"], strict=False), strict=False))
            raise RuntimeError(f"no linear.v1 result for {task}")

        a, b = preds(ours), preds(random)
        ids = sorted(set(a) & set(b))
        if len(ids) != len(a) or len(ids) != len(b):
            raise RuntimeError(f"{task}: the two models were probed on different test objects")
        out = paired_bootstrap([a[i][0] for i in ids], [a[i][1] for i in ids], [b[i][1] for i in ids],
                               "r2", n_boot=2000, seed=0)
        out.update(task=task, protocol="linear.v1", compared=["pretrained", "random-weights"],
                   required_gain=MARGIN_GAIN, met=bool(out["delta"] >= MARGIN_GAIN and out["ci"][0] > 0))
        log.info("[demo] redshift from images, linear probe R²: pretrained %.3f vs random weights %.3f: "
                 "gain %+.3f (95%% CI %+.3f .. %+.3f, n = %d)", out["a"], out["b"], out["delta"],
                 out["ci"][0], out["ci"][1], out["n"])
        return out

    def leaderboard(self, results: Path, task_names: list[str]) -> dict:
        """Submit every model's results to a local git leaderboard, one `submit/<model>` branch
        each (validated and recomputed like any submission; the baselines checked against their
        re-run), merge them as a maintainer would, and render the board, marked as a demo."""
        import subprocess

        from mmu.eval.leaderboard import aggregate, columns, html_page, markdown, read_board
        from mmu.eval.submit import SubmitError, submit

        repo = self.out / "leaderboard"
        ident = ["-c", "user.name=mmu demo", "-c", "user.email=mmu-demo@localhost"]
        if not (repo / ".git").exists():
            repo.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
            (repo / "README.md").write_text(f"# {BOARD_TITLE}\n\nMade by `mmu demo`; results on mock data "
                                            "pinned to this run's own builds.\n")
            subprocess.run(["git", "-C", str(repo), "add", "README.md"], check=True)
            subprocess.run(["git", "-C", str(repo), *ident, "commit", "-q", "-m", "Start the demo board"], check=True)
        entries = [("demo-pretrained", results / "pretrained", None)]
        entries += [(f"baseline-{k}", results / f"baseline-{k}", self.out / "results-rerun" / f"baseline-{k}")
                    for k in BASELINES]
        for model, path, rerun in entries:
            branch = f"submit/{model}"
            try:
                submit(path, str(repo), model=model, replace=True, branch=branch, verified_by=rerun)
            except SubmitError as e:
                if "nothing to commit" not in str(e):  # a resumed demo: already submitted
                    raise
            subprocess.run(["git", "-C", str(repo), *ident, "merge", "-q", "--no-ff", "-m", f"Merge {branch}",
                            branch], check=True, capture_output=True)
        cols = [c for c in columns() if c[0] in task_names and c[1] in ("linear.v1", "retrieval.v1")]
        rows = aggregate(read_board(str(repo), ref="main"), cols)
        site = self.out / "site"
        site.mkdir(parents=True, exist_ok=True)
        (site / "leaderboard.md").write_text(markdown(rows, cols, title=BOARD_TITLE))
        (site / "index.html").write_text(html_page(rows, cols, title=BOARD_TITLE))
        return {"repo": str(repo), "site": str(site / "index.html"), "models": [r.model for r in rows]}

    # ---------------------------------------------------------------------------------------
    def run(self, until: str = "eval") -> dict:
        """Run (or resume) every stage up to `until`, then write OUT/demo.json, and OUT/report.html
        once the last stage is done.

        Args:
            until: the last stage to run (`STAGES`): e.g. "export" makes the data on a CPU
                machine, and a later run in the same folder (on a GPU machine, say) goes on from
                there.

        Returns:
            The summary (also OUT/demo.json): size, seed, seconds per stage, the stages reused
            from an earlier run, the total, each stage's result, and the report's path (None
            when stopped before the last stage).

        Raises:
            ValueError: an unknown stage.
        """
        from mmu.engine.cluster import dask_client

        if until not in STAGES:
            raise ValueError(f"until must be one of {', '.join(STAGES)}, got {until!r}")
        self.out.mkdir(parents=True, exist_ok=True)
        if self.size.name == "medium":
            import torch

            if not torch.cuda.is_available():
                log.warning("[demo] --size medium is sized for a GPU machine (16 cores, one H100); here, without a "
                            "GPU, its pretraining (the %s config, %d steps) and its supervised baseline run on the "
                            "CPU and take many hours (docs/demo.md)", self.size.pretrain_config,
                            self.size.pretrain_steps)
        t0 = time.perf_counter()
        steps = {"sim": self.sim, "build": self.build_all, "crossmatch": self.crossmatch_all,
                 "export": self.export_all, "pretrain": self.pretrain,
                 "eval": lambda: self.evaluate(results["pretrain"]["checkpoint"])}
        results: dict = {}
        with dask_client(self.workers) as self.client:
            for name in STAGES[:STAGES.index(until) + 1]:
                results[name] = self.stage(name, steps[name])
        total = time.perf_counter() - t0
        summary = {"size": asdict(self.size), "seed": self.seed, "stages_s": self.times, "reused": self.reused,
                   "total_s": total, "results": results, "report": None}
        atomic_write_json(self.out / "demo.json", summary)
        if until == STAGES[-1]:
            from mmu.demo.report import write_report
            summary["report"] = str(write_report(self.out, summary))
        else:
            log.info("[demo] stopped after %s, as asked; `mmu demo --out %s --size %s` goes on from there", until,
                     self.out, self.size.name)
        return summary


def stage_table(summary: dict) -> str:
    """The time of each stage of a finished demo (`Demo.run`'s summary), and the report's path:
    what `mmu demo` prints at the end.

    Example:
        >>> print(stage_table({"stages_s": {"sim": 3.2}, "reused": [], "total_s": 3.4,
        ...                    "report": "demo/report.html"}))
        <BLANKLINE>
        stage         seconds
        sim               3.2
        total             3.4
        <BLANKLINE>
        report: demo/report.html
    """
    lines = ["", "stage         seconds"]
    for k, v in summary["stages_s"].items():
        lines.append(f"{k:<13} {v:7.1f}" + ("  (earlier run, reused)" if k in summary.get("reused", []) else ""))
    lines += [f"{'total':<13} {summary['total_s']:7.1f}"]
    if summary.get("report"):
        lines += ["", f"report: {summary['report']}"]
    return "\n".join(lines)
