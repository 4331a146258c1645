"""The masked pairwise contrastive loss: equal to open_clip's ClipLoss / SigLipLoss on the valid
rows, and under 2-process gloo DDP equal (loss and every gradient) to one process holding the
same global batch, with modalities missing unevenly across ranks, for the gathered and the local
variant of both losses."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from mmu.pretrain.config import parse_config
from mmu.pretrain.data import Collator
from mmu.pretrain.loss import PairwiseContrastiveLoss
from mmu.pretrain.model import MultimodalCLIP, valid_masks

BANDS = ["lsst-g", "lsst-r", "lsst-i"]
B = 6  # rows per rank


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tri_config(kind: str = "infonce", local: bool = False):
    return parse_config({
        "name": "loss-test", "seed": 3,
        "model": {"embed_dim": 8, "modalities": {
            "image": {"encoder": "tiny_convnet", "channels": 2, "size": 8},
            "spectrum": {"encoder": "tiny_spectrum", "length": 32, "options": {"patch_size": 8}},
            "lightcurve": {"encoder": "tiny_lightcurve", "length": 6, "bands": BANDS}}},
        "loss": {"kind": kind, "local": local},
        "train": {"steps": 1}, "run": {"dir": "unused"}})


def _sample(rng, i, have):
    s = {"object_id": f"obj{i}"}
    s["image"] = ({"flux": rng.normal(size=(2, 8, 8)).astype(np.float32),
                   "ivar": rng.uniform(1, 2, (2, 8, 8)).astype(np.float32),
                   "mask": rng.random((2, 8, 8)) < 0.1} if "i" in have else None)
    s["spectrum"] = ({"flux": rng.normal(size=32).astype(np.float32),
                      "ivar": np.ones(32, np.float32), "mask": rng.random(32) < 0.1,
                      "lambda": np.linspace(4000, 8000, 32).astype(np.float32)} if "s" in have else None)
    t = 6
    s["lightcurve"] = ({"time": np.sort(rng.uniform(0, 50, t)), "band": np.array(rng.choice(BANDS, t)),
                        "flux": rng.normal(size=t).astype(np.float32), "flux_err": np.ones(t, np.float32),
                        "mask": np.zeros(t, bool)} if "l" in have else None)
    return s


# rank 0: no light curve at all, one missing image, one empty (invalid) row at the end;
# rank 1: everything but two spectra. So image|lightcurve has valid anchors on rank 1 only.
LAYOUT = [["is", "is", "s", "is", "is", None], ["isl", "il", "isl", "il", "isl", "isl"]]


def rank_batches(cfg):
    rng = np.random.default_rng(0)
    coll = Collator(cfg.model.modalities, B)
    out = []
    for r, layout in enumerate(LAYOUT):
        samples = [None if have is None else _sample(rng, r * B + i, have) for i, have in enumerate(layout)]
        out.append(coll(samples))
    return out


def concat(batches):
    def cat(xs):
        if isinstance(xs[0], dict):
            return {k: cat([x[k] for x in xs]) for k in xs[0]}
        if isinstance(xs[0], torch.Tensor):
            return torch.cat(xs, 0)
        if isinstance(xs[0], list):
            return sum(xs, [])
        return xs[0]
    return cat(batches)


def loss_and_grads(model, batch, loss_fn):
    model.zero_grad()
    out = model(batch)
    loss, _ = loss_fn(out["embeddings"], valid_masks(batch, model.kinds), out["logit_scale"],
                      out["logit_bias"])
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters()}


def reference(kind, local):
    cfg = tri_config(kind, local)
    torch.manual_seed(cfg.seed)
    model = MultimodalCLIP(cfg.model, cfg.loss)
    # make the temperatures differ from their init, so their gradients are checked too
    with torch.no_grad():
        for i, p in enumerate(model.logit_scale.values()):
            p.add_(0.3 * i)
    return model, concat(rank_batches(cfg)), PairwiseContrastiveLoss(model.pairs, kind, local)


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
def test_masked_loss_equals_open_clip_on_valid_rows(kind):
    from open_clip.loss import ClipLoss, SigLipLoss

    model, batch, loss_fn = reference(kind, False)
    with torch.no_grad():
        out = model(batch)
        masks = valid_masks(batch, model.kinds)
        _, stats = loss_fn(out["embeddings"], masks, out["logit_scale"], out["logit_bias"])
        for a, b in model.pairs:
            key = f"{a}|{b}"
            ok = masks[a] & masks[b]
            za, zb = out["embeddings"][a][ok], out["embeddings"][b][ok]
            scale = out["logit_scale"][key].exp()
            if kind == "infonce":
                want = ClipLoss()(za, zb, scale)
            else:
                want = SigLipLoss()(za, zb, scale, out["logit_bias"][key])
            assert int(stats[key][1]) == int(ok.sum()) > 0
            torch.testing.assert_close(stats[key][0], want, rtol=1e-5, atol=1e-6)


def test_invalid_rows_get_no_gradient_and_no_nan():
    model, batch, loss_fn = reference("infonce", False)
    emb = {c: torch.nn.functional.normalize(torch.randn(2 * B, 8), dim=-1).requires_grad_()
           for c in model.kinds}
    masks = valid_masks(batch, model.kinds)
    loss, stats = loss_fn(emb, masks, {k: v.detach() for k, v in model.logit_scale.items()}, None)
    loss.backward()
    assert torch.isfinite(loss)
    for c in model.kinds:
        used = torch.zeros(2 * B, dtype=torch.bool)
        for a, b in model.pairs:
            if c in (a, b):
                used |= masks[a] & masks[b]
        assert torch.all(emb[c].grad[~used] == 0), c
        assert torch.all(emb[c].grad[used].abs().sum(-1) > 0), c
    # a pair with no valid row anywhere contributes 0, not NaN
    none = {c: torch.zeros_like(m) for c, m in masks.items()}
    loss0, _ = loss_fn(emb, none, {k: v.detach() for k, v in model.logit_scale.items()}, None)
    assert float(loss0.detach()) == 0.0


def _ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        for kind in ("infonce", "sigmoid"):
            for local in (False, True):
                model, _, loss_fn = reference(kind, local)
                batch = rank_batches(tri_config(kind, local))[rank]
                ddp = DDP(model)
                out = ddp(batch)
                loss, _ = loss_fn(out["embeddings"], valid_masks(batch, model.kinds), out["logit_scale"],
                                  out["logit_bias"])
                loss.backward()
                mean = loss.detach().clone()
                dist.all_reduce(mean)
                results[(kind, local)] = (float(mean) / world, float(loss),
                                          {n: p.grad.clone() for n, p in model.named_parameters()})
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_equal_one_process(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for kind in ("infonce", "sigmoid"):
        for local in (False, True):
            model, batch, loss_fn = reference(kind, local=False)
            want_loss, want_grads = loss_and_grads(model, batch, loss_fn)
            for r in range(2):
                mean_loss, rank_loss, grads = ranks[r][(kind, local)]
                assert mean_loss == pytest.approx(want_loss, rel=1e-5), (kind, local)
                if not local:  # every rank computes the whole global loss
                    assert rank_loss == pytest.approx(want_loss, rel=1e-5)
                for name, g in want_grads.items():
                    # float32 sums in another order (per rank, then all-reduced): differences of
                    # ~1e-4 of the tensor's scale, far below a missing factor or a wrong gather
                    scale = float(g.abs().max()) or 1.0
                    torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-4 * scale,
                                               msg=lambda m: f"{kind} local={local} rank {r} {name}: {m}")  # noqa: B023
            if local:  # the ranks' local losses really differ: the test is not vacuous
                assert ranks[0][(kind, True)][1] != pytest.approx(ranks[1][(kind, True)][1])
