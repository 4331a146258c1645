"""The training loop: one process per device (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK), AdamW
with warmup + cosine, grad clipping, bf16 autocast and compiled encoders on GPU, DDP, atomic
checkpoints, exact `--resume`, JSONL + TensorBoard logs, validation loss and retrieval accuracy.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from mmu.pretrain import checkpoint as ckpt_io
from mmu.pretrain.config import PretrainConfig, dump_config
from mmu.pretrain.data import derive_seed, open_exports, train_loader, training_manifest, val_batches
from mmu.pretrain.loss import PairwiseContrastiveLoss
from mmu.pretrain.model import MultimodalCLIP, valid_masks
from mmu.pretrain.preprocess import augment


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


def _rank0_print(rank: int, *args):
    if rank == 0:
        print(*args, file=sys.stderr, flush=True)


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


def run_training(cfg: PretrainConfig, resume: bool = False) -> dict:
    """Train `cfg` (resuming from its run dir's last checkpoint with `resume`); returns a summary."""
    rank, world, device = setup_distributed(cfg.train.device)
    run_dir = Path(cfg.run.dir)
    ckpt_dir = run_dir / "checkpoints"
    existing = ckpt_io.find_latest(ckpt_dir)
    if existing is not None and not resume:
        raise TrainingError(f"{run_dir} already holds checkpoints (latest {existing.name}); pass "
                            "--resume to continue that run, or set run.dir to a new folder")
    model, loss_fn, optimizer, scheduler, scaler, autocast = make_training(cfg, device)
    use_cuda = device.type == "cuda"

    train_exports, val_exports = open_exports(cfg.data.train), open_exports(cfg.data.val)
    if not train_exports:
        raise TrainingError("no training data: set data.train to `mmu export-wds` output folder(s)")
    manifest = training_manifest(train_exports, val_exports, cfg.data.train_split, cfg.data.val_split)
    signature = cfg.model_signature()

    start = 0
    if resume and existing is not None:
        state = ckpt_io.load_checkpoint(existing)
        ckpt_io.check_same_model(state, signature, existing)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        data_state = state["data"]
        if (data_state["world_size"], data_state["streams"]) != (world, max(1, cfg.data.num_workers)):
            raise TrainingError(f"{existing}: trained with {data_state['world_size']} rank(s) x "
                                f"{data_state['streams']} loader stream(s); resuming exactly needs the "
                                "same (set data.num_workers / the torchrun process count)")
        rngs = state["rng"]
        if rank < len(rngs):
            _set_rng_state(rngs[rank])
        start = int(state["step"])
        _rank0_print(rank, f"resuming {run_dir} from {existing.name} (step {start})")
    elif resume:
        _rank0_print(rank, f"--resume: no checkpoint in {ckpt_dir} yet; starting at step 0")

    if rank == 0:  # only now: a refused resume must not overwrite the run's config
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg))
    if world > 1:
        dist.barrier()

    if cfg.train.compile and use_cuda:
        for enc in model.encoders.values():
            enc.compile()  # the encoders only: the loss' gathers stay eager
    train_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if use_cuda else None)

    loader = train_loader(cfg, train_exports, rank, world, start, pin_memory=use_cuda)
    logger = _Logger(run_dir, rank == 0, cfg.train.tensorboard)
    progress = None
    if rank == 0 and cfg.train.progress:
        from tqdm import tqdm

        progress = tqdm(total=cfg.train.steps, initial=start, desc=cfg.name, unit="step",
                        dynamic_ncols=True)
    model.train()
    last = {}
    t_last, n_last = time.perf_counter(), 0
    data_iter = iter(loader)
    samples_seen = 0
    for step in range(start, cfg.train.steps):
        batch = next(data_iter)
        if batch["step"] != step:
            raise TrainingError(f"data stream out of step: got batch {batch['step']} at step {step}")
        batch = _to(batch, device)
        loss, stats, grad_norm = train_step(cfg, model, train_model, loss_fn, optimizer, scheduler,
                                            scaler, autocast, batch, rank, step)
        samples_seen += cfg.data.batch_size
        done = step + 1
        if done % cfg.train.log_every == 0 or done == cfg.train.steps:
            loss_val = loss.detach()
            if world > 1:  # local losses differ per rank; their mean is the global loss
                dist.all_reduce(loss_val)
                loss_val /= world
            now = time.perf_counter()
            rate = (samples_seen - n_last) * world / max(now - t_last, 1e-9)
            t_last, n_last = now, samples_seen
            last = {"step": done, "loss": float(loss_val), "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "samples_per_s": rate,
                    "pairs": {k: {"loss": float(v[0]), "n_valid": int(v[1]),
                                  "logit_scale": float(model.logit_scale[k].detach().exp())}
                              for k, v in stats.items()}}
            logger.log(last)
            if progress is not None:
                progress.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.2e}")
        if progress is not None:
            progress.update(1)
        if cfg.train.val_every and done % cfg.train.val_every == 0 and done != cfg.train.steps:
            logger.log({"step": done, **evaluate(model, loss_fn, cfg, val_exports, rank, world, device,
                                                 autocast)} if val_exports else {"step": done})
        if done % cfg.train.ckpt_every == 0 or done == cfg.train.steps:
            _save(cfg, model, optimizer, scheduler, scaler, manifest, signature, done, rank, world, ckpt_dir)
    summary = {"step": cfg.train.steps, "last": last}
    if val_exports:
        summary["val"] = evaluate(model, loss_fn, cfg, val_exports, rank, world, device, autocast)
        logger.log({"step": cfg.train.steps, **summary["val"]})
    if progress is not None:
        progress.close()
    logger.close()
    latest = ckpt_io.find_latest(ckpt_dir) if rank == 0 else None
    summary["checkpoint"] = str(latest) if latest else None
    del data_iter, loader
    return summary


def _save(cfg, model, optimizer, scheduler, scaler, manifest, signature, step, rank, world, ckpt_dir):
    rngs = [_rng_state()]
    if world > 1:
        rngs = [None] * world
        dist.all_gather_object(rngs, _rng_state())
    if rank == 0:
        state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
                 "data": {"step": step, "world_size": world, "streams": max(1, cfg.data.num_workers),
                          "seed": cfg.seed},
                 "config": cfg.to_dict(), "manifest": manifest, "model_signature": signature,
                 "versions": {"torch": str(torch.__version__)}}
        ckpt_io.save_checkpoint(ckpt_dir, state, step, keep=cfg.train.keep_checkpoints)
    if world > 1:
        dist.barrier()
