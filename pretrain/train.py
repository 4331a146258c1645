"""The training loop: one process per device (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK), AdamW
with warmup + cosine, grad clipping, bf16 autocast and compiled encoders on GPU, DDP, atomic
checkpoints, exact `--resume`, JSONL + TensorBoard logs, validation loss and retrieval accuracy.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import mmu.logs  # noqa: F401  (the `mmu` log handler: this module's messages reach stderr)
from mmu.pretrain import checkpoint as ckpt_io
from mmu.pretrain.config import PretrainConfig, dump_config
from mmu.pretrain.data import (
    column_mismatch,
    derive_seed,
    open_exports,
    split_samples,
    train_loader,
    training_manifest,
    val_batches,
)
from mmu.pretrain.loss import PairwiseContrastiveLoss
from mmu.pretrain.model import MultimodalCLIP, valid_masks
from mmu.pretrain.preprocess import augment

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    pass


def setup_distributed(device_pref: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref.startswith("cuda")
    device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, device


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "logit_" in name or name.endswith(("cls", "cls_token", "pos_embed"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_model(cfg: PretrainConfig) -> MultimodalCLIP:
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    return MultimodalCLIP(cfg.model, cfg.loss)


def _to(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, dict):
            out[k] = _to(v, device)
        else:
            out[k] = v
    return out


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": random.getstate()}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])
    n = s["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate(s["python"])


class _Logger:
    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.file = open(run_dir / "log.jsonl", "a") if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # tensorboard is optional
                pass

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in _flat_numbers(record).items():
                if k != "step":
                    self.tb.add_scalar(k, v, record["step"])

    def close(self):
        if self.file:
            self.file.close()
        if self.tb:
            self.tb.close()


def _flat_numbers(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat_numbers(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix + k] = v
    return out


@torch.no_grad()
def evaluate(model: MultimodalCLIP, loss_fn, cfg: PretrainConfig, exports, rank: int, world: int,
             device: torch.device, autocast) -> dict:
    """Validation loss (mean over the fixed number of val batches) and top-1 cross-modal retrieval
    accuracy among all valid val rows of all ranks, each direction of each pair."""
    was_training = model.training
    model.eval()
    losses, embs, valid = [], {c: [] for c in model.kinds}, {c: [] for c in model.kinds}
    for batch in val_batches(cfg, exports, rank, world):
        batch = _to(batch, device)
        with autocast():
            out = model(batch)
        masks = valid_masks(batch, model.kinds)
        loss, _ = loss_fn(out["embeddings"], masks, out["logit_scale"], out["logit_bias"])
        losses.append(float(loss))
        for c in model.kinds:
            embs[c].append(out["embeddings"][c].float())
            valid[c].append(masks[c])
    from mmu.pretrain.loss import gather_mask, gather_with_grad  # plain gathers here (no grad)

    result = {"val_loss": float(np.mean(losses)) if losses else float("nan"), "retrieval_top1": {}}
    E = {c: gather_with_grad(torch.cat(embs[c])) for c in model.kinds}
    V = {c: gather_mask(torch.cat(valid[c])) for c in model.kinds}
    for a, b in model.pairs:
        ok = V[a] & V[b]
        if ok.sum() == 0:
            continue
        za, zb = E[a][ok], E[b][ok]
        sims = za @ zb.T
        target = torch.arange(len(za), device=za.device)
        result["retrieval_top1"][f"{a}->{b}"] = float((sims.argmax(1) == target).float().mean())
        result["retrieval_top1"][f"{b}->{a}"] = float((sims.argmax(0) == target).float().mean())
        result["retrieval_top1"][f"{a}|{b}.n"] = int(ok.sum())
    model.train(was_training)
    return result


def train_step(cfg, model, train_model, loss_fn, optimizer, scheduler, scaler, autocast, batch: dict,
               rank: int, step: int):
    """One optimisation step on a batch already on the device (the benchmark times this too)."""
    device = batch["valid"].device
    # every random draw of a step is a function of (seed, rank, step): resume is exact
    torch.manual_seed(derive_seed(cfg.seed, rank, step, 1))
    gen = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, rank, step, 2))
    batch = augment(batch, model.kinds, gen, cfg.augment)
    with autocast():
        out = train_model(batch)
    loss, stats = loss_fn(out["embeddings"], valid_masks(batch, model.kinds), out["logit_scale"],
                          out["logit_bias"])
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    grad_norm = None
    if cfg.optim.grad_clip is not None:
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    model.clamp_logit_scales()
    return loss, stats, grad_norm


def make_training(cfg: PretrainConfig, device: torch.device):
    """Model (on `device`), loss, AdamW, warmup+cosine schedule, grad scaler, autocast factory."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_model(cfg).to(device)
    loss_fn = PairwiseContrastiveLoss(model.pairs, cfg.loss.kind, cfg.loss.local)
    o = cfg.optim
    optimizer = torch.optim.AdamW(_param_groups(model, o.weight_decay), lr=o.lr, betas=o.betas, eps=o.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, o.warmup_steps, cfg.train.steps, o.min_lr_ratio))
    use_cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.precision == "fp16" and use_cuda)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision)

    def autocast():
        if amp_dtype is None or not use_cuda:
            return nullcontext()
        return torch.autocast("cuda", dtype=amp_dtype)

    return model, loss_fn, optimizer, scheduler, scaler, autocast


RATE_AFTER_STEPS = 5  # the step rate and ETA are reported once this many steps have run
EMPTY_IN_A_ROW_LIMIT = 50  # this many batches in a row without a pair stop the run
CPU_HINT = ("on a CPU, pretrain/configs/demo.yaml trains in minutes on `mmu demo` shards (README, "
            "Pretraining); this config is sized for GPUs")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def out_of_memory_message(cfg: PretrainConfig, step: int, stage: str, exn: BaseException) -> str:
    """One line for a run that ran out of GPU (torch.cuda.OutOfMemoryError) or host (MemoryError)
    memory at `step` in `stage` ("training" or "validation"): what was set, which keys to lower."""
    d, t = cfg.data, cfg.train
    smaller = max(1, d.batch_size // 2)
    on_gpu = not isinstance(exn, MemoryError)  # torch.cuda.OutOfMemoryError
    where = "GPU" if on_gpu else "host (CPU)"
    said = (f"out of {where} memory at step {step} ({stage}) with data.batch_size={d.batch_size} per "
            f"process, train.precision={t.precision}")
    fixes = [f"--set data.batch_size={smaller}"] if d.batch_size > 1 else []
    if on_gpu:
        if t.precision == "fp32":
            fixes.append("train.precision=bf16")
    else:
        said += f", data.shuffle_buffer={d.shuffle_buffer}, data.num_workers={d.num_workers}"
        fixes.append(f"data.shuffle_buffer={max(1, d.shuffle_buffer // 4)}")
        if d.num_workers > 1:
            fixes.append(f"data.num_workers={d.num_workers // 2}")
    return said + (f"; lower them, e.g. {' '.join(fixes)}" if fixes else "; the model alone does not fit")


def count_pairs(batch: dict, pairs) -> int:
    """Rows of `batch` (on the host) holding both modalities of a pair, summed over the pairs."""
    masks = valid_masks(batch, {c for p in pairs for c in p})
    return int(sum(int((masks[a] & masks[b]).sum()) for a, b in pairs))


class _Run:
    """One training run, as named steps: `prepare` (refuse a finished run, build the model, open and
    check the data, restore a checkpoint, save the config), `loop` (the steps), `finish` (final
    validation, the summary). `run_training` calls them in this order."""

    def __init__(self, cfg: PretrainConfig, resume: bool):
        self.cfg, self.resume = cfg, resume
        self.rank, self.world, self.device = setup_distributed(cfg.train.device)
        self.use_cuda = self.device.type == "cuda"
        self.run_dir = Path(cfg.run.dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.start = 0
        self.empty_batches = 0  # steps whose batch held no pair (skipped), this run and resumed ones

    # ------------------------------------------------------------------ prepare
    def prepare(self) -> None:
        existing = self.refuse_overwrite()
        (self.model, self.loss_fn, self.optimizer, self.scheduler, self.scaler,
         self.autocast) = make_training(self.cfg, self.device)
        self.open_data()
        self.signature = self.cfg.model_signature()
        if self.resume and existing is not None:
            self.restore(existing)
        elif self.resume:
            self.info("--resume: no checkpoint in %s yet; starting at step 0", self.ckpt_dir)
        self.save_config()
        self.train_model = self.wrap_model()

    def refuse_overwrite(self) -> Path | None:
        existing = ckpt_io.find_latest(self.ckpt_dir)
        if existing is None and ckpt_io.list_checkpoints(self.ckpt_dir):
            # every checkpoint is damaged: starting again at step 0 would silently lose the run
            refused = "\n".join(f"  {p.name}: {why}" for p, why in ckpt_io.refused_checkpoints(self.ckpt_dir))
            raise TrainingError(
                f"{self.ckpt_dir}: no intact checkpoint to {'resume from' if self.resume else 'keep'}; "
                f"each was refused:\n{refused}\nRestore them from a copy, or set run.dir to a new folder "
                "to train from step 0")
        if existing is not None and not self.resume:
            raise TrainingError(f"{self.run_dir} already holds checkpoints (latest {existing.name}); pass "
                                "--resume to continue that run, or set run.dir to a new folder")
        return existing

    def open_data(self) -> None:
        """Open the exports, refuse data the config cannot train on, warn about a batch larger
        than the training set."""
        d = self.cfg.data
        self.train_exports, self.val_exports = open_exports(d.train), open_exports(d.val)
        if not self.train_exports:
            raise TrainingError("no training data: set data.train to `mmu export-wds` output folder(s)")
        for setting, exports in (("data.train", self.train_exports), ("data.val", self.val_exports)):
            if not exports:
                continue
            error, warns = column_mismatch(self.cfg.model, exports, setting)
            if error:
                raise TrainingError(error)
            for w in warns:
                self.warn(w)
        self.n_train = split_samples(self.train_exports, d.train_split)
        rows = d.batch_size * self.world
        if self.n_train and rows > self.n_train:
            ranks = f" x {self.world} ranks" if self.world > 1 else ""
            self.warn(f"data.batch_size {d.batch_size}{ranks} = {rows} rows per step exceeds the "
                      f"{self.n_train} training samples in {d.train}: every batch repeats samples, and a "
                      "repeated sample is a false negative for the contrastive loss; set "
                      f"data.batch_size to at most {self.n_train // self.world}")
        self.manifest = training_manifest(self.train_exports, self.val_exports, d.train_split, d.val_split)

    def restore(self, existing: Path) -> None:
        cfg, rank, world = self.cfg, self.rank, self.world
        state = ckpt_io.load_checkpoint(existing)
        ckpt_io.check_same_model(state, self.signature, existing)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        data_state = state["data"]
        if (data_state["world_size"], data_state["streams"]) != (world, max(1, cfg.data.num_workers)):
            raise TrainingError(f"{existing}: trained with {data_state['world_size']} rank(s) x "
                                f"{data_state['streams']} loader stream(s); resuming exactly needs the "
                                "same (set data.num_workers / the torchrun process count)")
        rngs = state["rng"]
        if rank < len(rngs):
            _set_rng_state(rngs[rank])
        self.start = int(state["step"])
        self.empty_batches = int(data_state.get("empty_batches", 0))
        self.info("resuming %s from %s (step %d)", self.run_dir, existing.name, self.start)

    def save_config(self) -> None:
        if self.rank == 0:  # only now: a refused resume must not overwrite the run's config
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_config(self.cfg))
        if self.world > 1:
            dist.barrier()

    def wrap_model(self) -> torch.nn.Module:
        if self.cfg.train.compile and self.use_cuda:
            for enc in self.model.encoders.values():
                enc.compile()  # the encoders only: the loss' gathers stay eager
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            return DDP(self.model, device_ids=[self.device.index] if self.use_cuda else None)
        return self.model

    def warn(self, message: str) -> None:
        if self.rank == 0:
            log.warning("warning: %s", message)

    def info(self, message: str, *args) -> None:
        if self.rank == 0:
            log.info(message, *args)

    # ------------------------------------------------------------------ what to expect
    def announce(self) -> None:
        """Say what runs where: device, precision, size, steps (rank 0, at the start)."""
        cfg = self.cfg
        if self.rank != 0:
            return
        precision = cfg.train.precision
        if precision != "fp32" and not self.use_cuda:
            precision = f"fp32 ({cfg.train.precision} autocast needs a GPU)"
        n_params = sum(p.numel() for p in self.model.parameters())
        where = str(self.device) if self.world == 1 else f"{self.world} processes ({self.device.type})"
        n_threads = torch.get_num_threads()
        threads = f", {n_threads} thread{'s' if n_threads != 1 else ''}" if not self.use_cuda else ""
        log.info("training %s: %.2f M parameters on %s%s, precision %s; steps %d to %d of %d rows%s "
                 "from %d training samples", cfg.name, n_params / 1e6, where, threads, precision,
                 self.start + 1, cfg.train.steps, cfg.data.batch_size,
                 " per process" if self.world > 1 else "", self.n_train)
        if not self.use_cuda and n_params > 5_000_000:
            log.info("note: %s", CPU_HINT)

    def report_rate(self, steps: int, seconds: float, done: int) -> None:
        remaining = self.cfg.train.steps - done
        if self.rank != 0 or steps <= 0 or remaining <= 0:
            return
        rate = steps / max(seconds, 1e-9)
        log.info("%.2f steps/s (%.0f samples/s): about %s for the remaining %d steps", rate,
                 rate * self.cfg.data.batch_size * self.world, _duration(remaining / rate), remaining)
        if not self.use_cuda and remaining / rate > 30 * 60:
            log.info("note: %s", CPU_HINT)

    # ------------------------------------------------------------------ the steps
    def loop(self) -> dict:
        cfg, rank, world = self.cfg, self.rank, self.world
        loader = train_loader(cfg, self.train_exports, rank, world, self.start, pin_memory=self.use_cuda)
        self.logger = _Logger(self.run_dir, rank == 0, cfg.train.tensorboard)
        self.announce()
        self.progress = None
        if rank == 0 and cfg.train.progress:
            from mmu.logs import tqdm

            self.progress = tqdm(total=cfg.train.steps, initial=self.start, desc=cfg.name, unit="step",
                                 dynamic_ncols=True)
        self.model.train()
        last = {}
        t_last, n_last = time.perf_counter(), 0
        t_first_done = None
        data_iter = iter(loader)
        samples_seen = 0
        empty_in_a_row = 0
        for step in range(self.start, cfg.train.steps):
            batch = next(data_iter)
            if batch["step"] != step:
                raise TrainingError(f"data stream out of step: got batch {batch['step']} at step {step}")
            n_pairs = self.global_pairs(batch)
            done = step + 1
            with self.out_of_memory(done, "training"):
                batch = _to(batch, self.device)
                if n_pairs == 0:
                    empty_in_a_row += 1
                    self.skip_empty_batch(done, empty_in_a_row)
                    loss = stats = grad_norm = None
                else:
                    empty_in_a_row = 0
                    loss, stats, grad_norm = train_step(cfg, self.model, self.train_model, self.loss_fn,
                                                        self.optimizer, self.scheduler, self.scaler,
                                                        self.autocast, batch, rank, step)
            samples_seen += cfg.data.batch_size
            if done in (self.start + 1, self.start + 1 + RATE_AFTER_STEPS) and self.use_cuda:
                torch.cuda.synchronize()  # time finished steps, not queued kernels
            if done == self.start + 1:
                t_first_done = time.perf_counter()
            elif done == self.start + 1 + RATE_AFTER_STEPS and t_first_done is not None:
                self.report_rate(RATE_AFTER_STEPS, time.perf_counter() - t_first_done, done)
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                now = time.perf_counter()
                rate = (samples_seen - n_last) * world / max(now - t_last, 1e-9)
                t_last, n_last = now, samples_seen
                last = self.log_step(done, loss, stats, grad_norm, rate)
            if self.progress is not None:
                self.progress.update(1)
            if cfg.train.val_every and done % cfg.train.val_every == 0 and done != cfg.train.steps:
                self.logger.log({"step": done, **self.validate(done)} if self.val_exports else {"step": done})
            if done % cfg.train.ckpt_every == 0 or done == cfg.train.steps:
                _save(cfg, self.model, self.optimizer, self.scheduler, self.scaler, self.manifest,
                      self.signature, done, rank, world, self.ckpt_dir, self.empty_batches)
        del data_iter, loader
        return last

    def global_pairs(self, batch: dict) -> int:
        """Valid pairs in this step's batch over all ranks (every rank takes the same decision)."""
        n = count_pairs(batch, self.model.pairs)
        if self.world > 1:
            t = torch.tensor([n], device=self.device)
            dist.all_reduce(t)
            n = int(t.item())
        return n

    def skip_empty_batch(self, done: int, in_a_row: int) -> None:
        """A batch without a single pair: no optimiser step (a zero loss would still move the
        weights through AdamW's momentum and weight decay), the schedule still advances."""
        self.empty_batches += 1
        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": intended
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        if self.empty_batches == 1:
            self.warn(f"step {done}: the batch holds no row with both modalities of a pair "
                      f"({', '.join(f'{a}|{b}' for a, b in self.model.pairs)}); skipped, and counted "
                      "as empty_batches in log.jsonl and the summary")
        if in_a_row >= min(EMPTY_IN_A_ROW_LIMIT, self.cfg.train.steps - self.start):
            raise TrainingError(
                f"{in_a_row} batches in a row (to step {done}) held no row with both modalities of a "
                f"pair of the config ({', '.join(f'{a}|{b}' for a, b in self.model.pairs)}): are the "
                f"exports in {self.cfg.data.train} mostly unmatched rows (`--keep-unmatched`), or do "
                "their samples lack a column?")

    def log_step(self, done: int, loss, stats, grad_norm, rate: float) -> dict:
        record = {"step": done, "loss": None, "lr": self.scheduler.get_last_lr()[0], "grad_norm": None,
                  "samples_per_s": rate, "empty_batches": self.empty_batches}
        if loss is None:
            record["empty_batch"] = True
        else:
            loss_val = loss.detach()
            if self.world > 1:  # local losses differ per rank; their mean is the global loss
                dist.all_reduce(loss_val)
                loss_val /= self.world
            record.update(loss=float(loss_val),
                          grad_norm=float(grad_norm) if grad_norm is not None else None,
                          pairs={k: {"loss": float(v[0]), "n_valid": int(v[1]),
                                     "logit_scale": float(self.model.logit_scale[k].detach().exp())}
                                 for k, v in stats.items()})
        self.logger.log(record)
        if self.progress is not None:
            loss_text = "skipped (no pair)" if loss is None else f"{record['loss']:.4f}"
            self.progress.set_postfix(loss=loss_text, lr=f"{record['lr']:.2e}")
        return record

    def validate(self, step: int) -> dict:
        with self.out_of_memory(step, "validation"):
            return evaluate(self.model, self.loss_fn, self.cfg, self.val_exports, self.rank, self.world,
                            self.device, self.autocast)

    @contextmanager
    def out_of_memory(self, step: int, stage: str):
        """Turn an out-of-memory error (GPU or host) into a one-line `TrainingError` naming the step
        and the settings to lower (a traceback through the encoders says neither)."""
        try:
            yield
        except (torch.cuda.OutOfMemoryError, MemoryError) as e:
            raise TrainingError(out_of_memory_message(self.cfg, step, stage, e)) from None

    # ------------------------------------------------------------------ finish
    def finish(self, last: dict) -> dict:
        cfg = self.cfg
        summary = {"step": cfg.train.steps, "last": last, "empty_batches": self.empty_batches}
        if self.val_exports:
            summary["val"] = self.validate(cfg.train.steps)
            self.logger.log({"step": cfg.train.steps, **summary["val"]})
        if self.progress is not None:
            self.progress.close()
        if self.empty_batches:
            self.warn(f"{self.empty_batches} of {cfg.train.steps} steps had a batch without a pair and "
                      "were skipped (empty_batches in log.jsonl)")
        self.logger.log({"step": cfg.train.steps, "empty_batches": self.empty_batches, "final": True})
        self.logger.close()
        latest = ckpt_io.find_latest(self.ckpt_dir) if self.rank == 0 else None
        summary["checkpoint"] = str(latest) if latest else None
        return summary


def run_training(cfg: PretrainConfig, resume: bool = False) -> dict:
    """Train `cfg` (resuming from its run dir's last checkpoint with `resume`); returns a summary:
    {step, last (the last logged step), empty_batches, val, checkpoint}."""
    run = _Run(cfg, resume)
    run.prepare()
    return run.finish(run.loop())


def _save(cfg, model, optimizer, scheduler, scaler, manifest, signature, step, rank, world, ckpt_dir,
          empty_batches: int = 0):
    rngs = [_rng_state()]
    if world > 1:
        rngs = [None] * world
        dist.all_gather_object(rngs, _rng_state())
    if rank == 0:
        state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
                 "data": {"step": step, "world_size": world, "streams": max(1, cfg.data.num_workers),
                          "seed": cfg.seed, "empty_batches": empty_batches},
                 "config": cfg.to_dict(), "manifest": manifest, "model_signature": signature,
                 "versions": {"torch": str(torch.__version__)}}
        ckpt_io.save_checkpoint(ckpt_dir, state, step, keep=cfg.train.keep_checkpoints)
    if world > 1:
        dist.barrier()
