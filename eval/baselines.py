"""`mmu eval baselines`: the rows every leaderboard shows, made only by this command.

- random-weights: the config's model (the trainer's encoders + projections) at initialisation,
  saved as a real checkpoint (step 0, no training manifest) and evaluated like any other;
- raw-pca: PCA of the raw flux (pixels / spectrum / light-curve fluxes, collated to the config's
  shapes by the trainer's collator, bad values zeroed), fitted on train rows only (at most
  `max_fit_rows`, the first by sha256(object_id));
- supervised: one encoder per input column (the config's, from the trainer's encoder registry)
  trained end to end on the labels of every task reading that column (multi-output: standardised
  regression targets with MSE, classes with cross-entropy), train rows only, fixed epochs; its
  backbone features then go through the same protocols.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from mmu.eval.embed import CheckpointEmbedder, _source_sha256
from mmu.eval.protocols import gallery_order
from mmu.eval.results import sha256_ids


def random_weights_checkpoint(cfg, out_dir: Path, seed: int = 0) -> Path:
    """The config's model at initialisation (seeded), saved as a real step-0 checkpoint.

    Args:
        cfg: the pretraining config.
        out_dir: checkpoint folder.
        seed: torch seed of the initialisation.

    Returns:
        The checkpoint's path (its name carries a sha256 prefix).
    """
    import torch

    from mmu.pretrain.checkpoint import save_checkpoint
    from mmu.pretrain.train import build_model

    torch.manual_seed(seed)
    model = build_model(cfg)
    state = {"model": model.state_dict(), "config": cfg.to_dict(), "manifest": {},
             "model_signature": cfg.model_signature(), "step": 0, "baseline": "random-weights", "seed": seed}
    return save_checkpoint(Path(out_dir), state, step=0, keep=1)


class _ConfigInputs:
    """Collate + preprocess of the config's modality columns (the encoders' exact inputs), and
    the train rows a baseline is fitted on, read in parallel (`mmu.eval.loader`).

    Args:
        cfg: the pretraining config (input columns and shapes).
        device: where the baseline computes ("cuda", "cpu", ...; default: a GPU when there is
            one). With a GPU, DataLoader workers read and collate the rows
            (`mmu.eval.loader.default_workers`).
    """

    def __init__(self, cfg, device: str | None = None):
        import torch

        self.cfg = cfg
        self.device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def collate(self, samples, column):
        """`samples`' values of `column` collated to the config's shapes (the trainer's collator)."""
        from mmu.pretrain.data import Collator

        m = self.cfg.model.modalities[column]
        return Collator({column: m}, len(samples))(samples)[column]

    def inputs(self, samples, column):
        """The encoder inputs of `samples`: collated, then preprocessed as in pretraining."""
        from mmu.pretrain.preprocess import preprocess

        return preprocess(self.cfg.model.modalities[column].kind, self.collate(samples, column))

    def preprocessing_id(self, column: str) -> str:
        """sha256 of the preprocessing source and `column`'s input spec (part of the cache key)."""
        from mmu.pretrain import data, preprocess

        spec = self.cfg.model.modalities[column].model_dump()
        spec.pop("encoder", None)
        spec.pop("options", None)
        return hashlib.sha256(json.dumps({"source": _source_sha256(preprocess, data), "input": spec},
                                         sort_keys=True, default=str).encode()).hexdigest()

    @property
    def columns(self) -> dict[str, str]:
        """The config's input columns and their modality kinds."""
        return {c: m.kind for c, m in self.cfg.model.modalities.items()}

    def train_inputs(self, group, model_column, batch_rows: int = 256):
        """The train rows of every task in `group` (each object once), as `(batches, ids)`:
        `batches()` yields (object ids, collated inputs of `model_column`) dataset by dataset, in
        the files' row order whatever the number of loader workers; `ids` are the sorted ids."""
        from mmu.eval.loader import default_workers, iter_inputs

        per_dataset: dict = {}
        for d, column in group:
            key = (d.task.hub_name, column)
            entry = per_dataset.setdefault(key, (d.files["train"], set()))
            entry[1].update(d.ids["train"].tolist())
        all_ids = sorted({i for _, ids in per_dataset.values() for i in ids})
        workers = default_workers(self.device)

        def batches():
            seen: set = set()
            for (_name, column), (files, wanted) in per_dataset.items():
                for oids, inputs in iter_inputs(self, files, "train", column, model_column, batch_rows, workers):
                    keep = [i for i, o in enumerate(oids) if o in wanted and o not in seen]
                    if not keep:
                        continue
                    if len(keep) < len(oids):
                        oids, inputs = [oids[i] for i in keep], take_rows(inputs, keep)
                    seen.update(oids)
                    yield oids, inputs
        return batches, all_ids


def take_rows(inputs: dict, rows) -> dict:
    """Collated inputs of `rows` (positions) only."""
    import torch

    idx = torch.as_tensor(rows, dtype=torch.long)
    return {k: v[idx] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def _flat(x: dict):
    """Raw flux as collated (cropped / padded to the config's shapes), bad values zeroed."""
    v = x["flux"].masked_fill(x["mask"], 0.0)
    return np.nan_to_num(v.reshape(len(v), -1).cpu().numpy().astype(np.float32))


class RawPCAEmbedder(_ConfigInputs):
    """Baseline: PCA of each column's raw flux (collated to the config's shapes, bad values
    zeroed), fitted on train rows only (at most `max_fit_rows`, the first by sha256 of the id).

    Args:
        cfg: the pretraining config (input columns and shapes).
        n_components: PCA components (fewer when the fit set is smaller).
        max_fit_rows: the most train rows a PCA is fitted on.
        device: as for `_ConfigInputs` (the PCA itself runs on the CPU; a GPU machine gets
            loader workers).
    """

    kind = "baseline"
    aligned = False  # one PCA per column: no shared space, so no retrieval

    def __init__(self, cfg, n_components: int = 64, max_fit_rows: int = 5000, device: str | None = None):
        super().__init__(cfg, device)
        self.n_components, self.max_fit_rows = n_components, max_fit_rows
        self.pca: dict = {}
        self.fits: dict = {}

    def prepare(self, group, model_column):
        """Fit the PCA of `model_column` on the train rows of every (task data, column) in `group`."""
        from sklearn.decomposition import PCA

        batches, ids = self.train_inputs(group, model_column)
        keep = set(np.asarray(ids)[gallery_order(ids)[:self.max_fit_rows]].tolist())
        feats = []
        for oids, inputs in batches():
            rows = [i for i, o in enumerate(oids) if o in keep]
            if rows:
                feats.append(_flat(inputs if len(rows) == len(oids) else take_rows(inputs, rows)))
        x = np.concatenate(feats)
        k = min(self.n_components, x.shape[0], x.shape[1])
        self.pca[model_column] = PCA(n_components=k, svd_solver="full").fit(x)
        self.fits[model_column] = {"datasets": sorted({f"{d.task.hub_name}@{d.manifest.content_revision}"
                                                       for d, _ in group}),
                                   "fit_rows": int(len(x)), "ids_sha256": sha256_ids(keep)}

    @property
    def sha256(self) -> str:
        """The baseline's identity: its settings and what it was fitted on."""
        return hashlib.sha256(json.dumps({"baseline": "raw-pca", "n_components": self.n_components,
                                          "max_fit_rows": self.max_fit_rows, "fits": self.fits},
                                         sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict:
        """The model block's extra keys: name, fits, config (no training manifest)."""
        return {"name": "baseline-raw-pca", "fits": self.fits, "config": self.cfg.to_dict(),
                "training_manifest": None}

    def embed_batch(self, inputs, column, which):
        """float32 [n, D] embeddings of collated `inputs` of `column` (`which` is ignored)."""
        return self.pca[column].transform(_flat(inputs)).astype(np.float32)

    def embed(self, samples, column, which):
        """float32 [n, D] embeddings of `samples`' `column` (`which` is ignored: one output)."""
        return self.embed_batch(self.collate(samples, column), column, which)


class SupervisedEmbedder(_ConfigInputs):
    """Baseline: one encoder per input column (the config's), trained end to end on the train
    labels of every task reading that column (standardised regression targets with MSE,
    classes with cross-entropy, one head per task); its backbone features are the embedding.

    A training step takes the task rows among up to `batch_size` consecutive rows of one file
    (so fewer where a partition holds other splits or rows no task keeps), in the files' row
    order: the same on any device and with any number of loader workers. Steps run on `device`:
    on a GPU under bf16 autocast by default, with DataLoader workers reading and collating rows.

    Args:
        cfg: the pretraining config (encoders, input columns and shapes).
        epochs: training epochs.
        batch_size: rows per step.
        lr: AdamW learning rate.
        seed: torch seed of the initialisation.
        device: "cuda", "cpu", ... (default: a GPU when there is one).
        precision: "fp32", "bf16" (autocast) or "auto" (bf16 on a GPU, fp32 on a CPU).
    """

    kind = "baseline"
    aligned = False  # one encoder per column: no shared space, so no retrieval

    def __init__(self, cfg, epochs: int = 5, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                 device: str | None = None, precision: str = "auto"):
        from mmu.eval.embed import resolve_precision

        super().__init__(cfg, device)
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed
        self.precision = resolve_precision(precision, self.device)
        self.encoders: dict = {}
        self.fits: dict = {}

    def _on_device(self, inputs: dict) -> dict:
        import torch

        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in inputs.items()}

    def prepare(self, group, model_column):
        """Train the encoder of `model_column` on the train labels of every task in `group`.

        Raises:
            ValueError: no regression or classification task reads the column.
        """
        import torch
        from torch import nn

        from mmu.eval.embed import autocast
        from mmu.pretrain.preprocess import preprocess
        from mmu.pretrain.registry import build_encoder

        torch.manual_seed(self.seed)
        m = self.cfg.model.modalities[model_column]
        enc = build_encoder(m.encoder, m, **m.options)
        heads, targets = nn.ModuleList(), []
        for d, _ in group:
            lab = dict(zip(d.ids["train"], d.y["train"], strict=False))
            if d.task.type == "regression":
                v = np.asarray(list(lab.values()), float)
                mu, sd = v.mean(), v.std() or 1.0
                targets.append(("regression", {k: (float(y) - mu) / sd for k, y in lab.items()}, None))
                heads.append(nn.Linear(enc.width, 1))
            elif d.task.type == "classification":
                classes = sorted({str(v) for v in d.y["train"]})
                targets.append(("classification", {k: classes.index(str(y)) for k, y in lab.items()}, classes))
                heads.append(nn.Linear(enc.width, len(classes)))
        if not heads:
            raise ValueError(f"no regression or classification task reads {model_column}; nothing to supervise")
        enc.to(self.device)
        heads.to(self.device)
        opt = torch.optim.AdamW(list(enc.parameters()) + list(heads.parameters()), lr=self.lr)
        batches, ids = self.train_inputs(group, model_column, self.batch_size)
        enc.train()
        for _ in range(self.epochs):
            for oids, inputs in batches():
                loss = 0.0
                with autocast(self.device, self.precision):  # the losses themselves run in fp32
                    feats = enc(preprocess(m.kind, self._on_device(inputs)))
                    for (kind, lab, _), head in zip(targets, heads, strict=False):
                        have = [i for i, o in enumerate(oids) if o in lab]
                        if not have:
                            continue
                        out = head(feats[torch.as_tensor(have, device=feats.device)]).float()
                        if kind == "regression":
                            y = torch.tensor([lab[oids[i]] for i in have], dtype=torch.float32, device=out.device)
                            loss = loss + nn.functional.mse_loss(out[:, 0], y)
                        else:
                            y = torch.tensor([lab[oids[i]] for i in have], dtype=torch.long, device=out.device)
                            loss = loss + nn.functional.cross_entropy(out, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        enc.eval()
        self.encoders[model_column] = enc
        buf = io.BytesIO()
        torch.save({k: v.cpu() for k, v in enc.state_dict().items()}, buf)
        self.fits[model_column] = {"tasks": [d.task.name for d, _ in group],
                                   "ids_sha256": sha256_ids(ids),
                                   "weights_sha256": hashlib.sha256(buf.getvalue()).hexdigest()}
        if self.precision != "fp32":  # fp32 fits keep their earlier identity
            self.fits[model_column]["precision"] = self.precision

    @property
    def sha256(self) -> str:
        """The baseline's identity: its settings and what it was fitted on."""
        return hashlib.sha256(json.dumps({"baseline": "supervised", "epochs": self.epochs, "lr": self.lr,
                                          "batch_size": self.batch_size, "seed": self.seed, "fits": self.fits},
                                         sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict:
        """The model block's extra keys: name, fits, config (no training manifest)."""
        return {"name": "baseline-supervised", "fits": self.fits, "config": self.cfg.to_dict(),
                "training_manifest": None}

    def embed_batch(self, inputs, column, which):
        """float32 [n, D] backbone features of collated `inputs` of `column` (`which` is ignored),
        on the device, in inference mode (bf16 autocast when `precision` is bf16)."""
        import torch

        from mmu.eval.embed import autocast
        from mmu.pretrain.preprocess import preprocess

        with torch.inference_mode(), autocast(self.device, self.precision):
            out = self.encoders[column](preprocess(self.cfg.model.modalities[column].kind, self._on_device(inputs)))
        return out.float().cpu().numpy()

    def embed(self, samples, column, which):
        """float32 [n, D] embeddings of `samples`' `column` (`which` is ignored: one output)."""
        return self.embed_batch(self.collate(samples, column), column, which)


def run_baselines(cfg, hub, out: Path, *, kinds=("random-weights", "raw-pca", "supervised"),
                  task_names=None, cache_dir=None, column_map=None, supervised_epochs: int = 5,
                  protocol_names=None, device: str | None = None,
                  supervised_batch_size: int = 64) -> dict[str, list[dict]]:
    """Evaluate each baseline on the tasks, like any model (`mmu.eval.run.run_tasks`).

    Args:
        cfg: the pretraining config (`mmu.pretrain.config`) whose encoders and input shapes the
            baselines use.
        hub: the hub folder holding the tasks' datasets.
        out: results root; each baseline's results go to OUT/baseline-<kind>/.
        kinds: any of "random-weights", "raw-pca", "supervised".
        task_names: tasks to run (default: every current task).
        cache_dir: embedding cache, used for random weights only (the fitted baselines are
            fitted afresh each time).
        column_map: dataset column -> model column, where the names differ.
        supervised_epochs: training epochs of the supervised encoders.
        supervised_batch_size: rows per training step of the supervised encoders.
        protocol_names: protocols to run (default: each task's own).
        device: where the baselines compute (default: a GPU when there is one).

    Returns:
        {kind: its results}.

    Raises:
        ValueError: an unknown baseline kind.

    Example:
        >>> run_baselines(load_config("pretrain/configs/demo.yaml"), "hub", Path("results"))  # doctest: +SKIP
    """
    from mmu.eval.run import model_block, run_tasks

    out = Path(out)
    done = {}
    for kind in kinds:
        if kind == "random-weights":
            path = random_weights_checkpoint(cfg, out / "baseline-random-weights" / "checkpoint")
            emb = CheckpointEmbedder(path, device=device)
            emb.kind = "baseline"
        elif kind == "raw-pca":
            emb = RawPCAEmbedder(cfg, device=device)
        elif kind == "supervised":
            emb = SupervisedEmbedder(cfg, epochs=supervised_epochs, batch_size=supervised_batch_size, device=device)
        else:
            raise ValueError(f"unknown baseline {kind!r}; one of random-weights, raw-pca, supervised")
        name = f"baseline-{kind}"
        which = "projection" if kind == "random-weights" else "backbone"
        done[kind] = run_tasks(emb, hub, out / name, model=lambda e=emb, n=name, k=kind: model_block(e, n, k),
                               task_names=task_names, protocol_names=protocol_names, which=which,
                               cache_dir=cache_dir if kind == "random-weights" else None,
                               column_map=column_map)
    return done
