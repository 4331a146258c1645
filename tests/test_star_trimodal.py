"""The tri-modal star config (docs/stars.md): Gaia XP spectrum x TESS light curve x Gaia catalog
scalars. Fast: the scalar MLP encoder (masking, per-feature scaling, its registry entry), the loss
over the three pairs of three modalities against a hand-written InfoNCE, and the export's packing of
catalog columns into a `scalars` modality. Slow: a star-rich mock -> gaia_dr3 + tess_spoc ->
crossmatch -> export -> `mmu.pretrain` on pretrain/configs/stars_trimodal.yaml, whose loss goes down."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from mmu.pretrain.encoders import ScalarMLP
from mmu.pretrain.loss import PairwiseContrastiveLoss, pair_key
from mmu.pretrain.registry import list_encoders
from mmu.shards.export import ExportError, parse_scalars, scalar_arrays

REPO = Path(__file__).absolute().parents[1]
STAR_CONFIG = REPO / "pretrain" / "configs" / "stars_trimodal.yaml"
FEATURES = ["gaia_phot_g_mean_mag", "gaia_phot_bp_mean_mag", "gaia_phot_rp_mean_mag", "gaia_parallax",
            "gaia_pmra", "gaia_pmdec"]
# the star-rich recipe of docs/stars.md, smaller: ~100 Gaia x TESS stars in ~10 s of sim time
SIM = dict(galaxies=80, transients=0, seed=3, footprint="fields:4",
           config={"stars_per_deg2": 60000.0, "star_r_range": [12.0, 17.5], "tess_r_limit": 16.5,
                   "hsc_field_fraction": 0.0, "qso_per_deg2": 0.0})


# ---------------------------------------------------------------- the scalar encoder


def _scalar_input(values, mask):
    return {"values": torch.tensor(values, dtype=torch.float32), "mask": torch.tensor(mask)}


def test_scalar_mlp_is_registered_for_the_scalars_kind():
    entries = list_encoders()
    assert entries["scalar_mlp"].kind == "scalars" and entries["tiny_scalar_mlp"].kind == "scalars"
    enc = entries["scalar_mlp"].factory(SimpleNamespace(features=FEATURES), width=16, depth=3)
    assert enc.width == 16
    assert sum(isinstance(m, torch.nn.Linear) for m in enc.modules()) == 3


def test_scalar_mlp_standardises_per_feature_and_ignores_masked_values():
    torch.manual_seed(0)
    enc = ScalarMLP(3, width=8, depth=1, loc=[15.0, 1.0, 0.0], scale=[2.0, 0.5, 10.0]).eval()
    lin = enc.net[0]
    # the first layer sees [z, missing]: z = (x - loc) / scale, zeroed where missing
    x = _scalar_input([[17.0, 2.0, -30.0], [15.0, 5.0, 1e9]], [[False, False, False], [False, True, False]])
    seen = []
    handle = lin.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    out = enc(x)
    handle.remove()
    assert out.shape == (2, 8)
    assert torch.allclose(seen[0], torch.tensor([[1.0, 2.0, -3.0, 0, 0, 0],
                                                 [0.0, 0.0, 10.0, 0, 1, 0]]))  # 1e9 clipped to +-10
    # a masked value does not matter; a non-finite one counts as missing; a good one does matter
    other = _scalar_input([[17.0, 2.0, -30.0], [15.0, -7.0, 1e9]], [[False, False, False], [False, True, False]])
    assert torch.equal(enc(other), out)
    nan = _scalar_input([[17.0, 2.0, -30.0], [15.0, float("nan"), 1e9]], [[False] * 3, [False, False, False]])
    assert torch.equal(enc(nan), out)
    moved = _scalar_input([[17.5, 2.0, -30.0], [15.0, 5.0, 1e9]], [[False] * 3, [False, True, False]])
    assert not torch.allclose(enc(moved)[0], out[0]) and torch.equal(enc(moved)[1], out[1])
    # "missing" differs from "equal to loc"
    at_loc = _scalar_input([[15.0, 1.0, 0.0]], [[False, False, False]])
    missing = _scalar_input([[15.0, 1.0, 0.0]], [[False, True, False]])
    assert not torch.allclose(enc(at_loc), enc(missing))


def test_scalar_mlp_trains_and_rejects_bad_options():
    enc = ScalarMLP(2, width=4, depth=2)
    enc(_scalar_input([[1.0, 2.0]], [[False, True]])).sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    with pytest.raises(ValueError, match="'loc' has 3 values for 2 features"):
        ScalarMLP(2, loc=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="'scale' must be > 0"):
        ScalarMLP(2, scale=[1.0, 0.0])
    with pytest.raises(ValueError, match="at least one feature"):
        ScalarMLP(0)


# ---------------------------------------------------------------- the loss over three modalities


def _infonce(a, b, scale):
    logits = scale * a @ b.T
    target = torch.arange(len(a))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def test_three_modalities_average_the_three_pair_losses_on_their_own_valid_rows():
    g = torch.Generator().manual_seed(1)
    names = ["gaia_spectrum", "tess_lightcurve", "gaia_scalars"]
    emb = {c: F.normalize(torch.randn(6, 5, generator=g), dim=-1) for c in names}
    present = {"gaia_spectrum": torch.ones(6, dtype=torch.bool),
               "tess_lightcurve": torch.tensor([True, True, False, True, True, False]),
               "gaia_scalars": torch.tensor([True, False, True, True, True, True])}
    pairs = [(names[0], names[1]), (names[0], names[2]), (names[1], names[2])]
    scales = {pair_key(a, b): torch.tensor(math.log(s)) for (a, b), s in zip(pairs, (10.0, 14.0, 20.0), strict=True)}
    total, stats = PairwiseContrastiveLoss(pairs, "infonce")(emb, present, scales)
    expected = []
    for (a, b), s in zip(pairs, (10.0, 14.0, 20.0), strict=True):
        rows = present[a] & present[b]
        expected.append(_infonce(emb[a][rows], emb[b][rows], s))
    assert torch.allclose(total, torch.stack(expected).mean(), atol=1e-5)
    assert {k: int(n) for k, (_, n) in stats.items()} == {"gaia_spectrum|tess_lightcurve": 4,
                                                          "gaia_spectrum|gaia_scalars": 5,
                                                          "tess_lightcurve|gaia_scalars": 3}


# ---------------------------------------------------------------- exporting catalog scalars


def test_parse_scalars_reads_the_cli_form_and_names_bad_specs():
    assert parse_scalars(["gaia_scalars=a, b,c"]) == {"gaia_scalars": ["a", "b", "c"]}
    assert parse_scalars({"s": ("x",)}) == {"s": ["x"]} and parse_scalars(None) == {}
    with pytest.raises(ExportError, match="expected NAME=COLUMN"):
        parse_scalars(["a,b"])
    with pytest.raises(ExportError, match="'s': no columns"):
        parse_scalars(["s="])
    with pytest.raises(ExportError, match="listed twice"):
        parse_scalars(["s=a,a"])
    with pytest.raises(ExportError, match="given twice"):
        parse_scalars(["s=a", "s=b"])


def test_scalar_arrays_mask_nulls_and_nan_and_leave_out_rows_with_nothing():
    t = pa.table({"g": pa.array([15.5, None, None], pa.float32()), "plx": [1.25, float("nan"), None],
                  "n": pa.array([3, 4, None], pa.int16())})
    rows = scalar_arrays(t, {"s": ["g", "plx", "n"]})
    assert rows[0]["s.values"].dtype == np.float32
    assert rows[0]["s.values"].tolist() == [15.5, 1.25, 3.0] and rows[0]["s.mask"].tolist() == [False] * 3
    assert rows[1]["s.values"].tolist() == [0.0, 0.0, 4.0] and rows[1]["s.mask"].tolist() == [True, True, False]
    assert rows[2] == {}  # every column missing: the modality is absent, the sample stays


# ---------------------------------------------------------------- the trainer's scalars kind


def test_the_star_config_parses_and_a_scalars_modality_needs_its_features():
    import yaml

    from mmu.pretrain.config import ConfigError, load_config, parse_config

    cfg = load_config(STAR_CONFIG)
    m = cfg.model.modalities["gaia_scalars"]
    assert m.kind == "scalars" and m.features == FEATURES and len(cfg.model.pair_list()) == 3
    raw = yaml.safe_load(STAR_CONFIG.read_text())
    raw["model"]["modalities"]["gaia_scalars"].pop("features")
    with pytest.raises(ConfigError, match="gaia_scalars.*needs its `features`"):
        parse_config(raw)


def test_the_collator_batches_scalars_and_names_a_wrong_length():
    from mmu.pretrain.config import load_config
    from mmu.pretrain.data import Collator

    m = load_config(STAR_CONFIG).model.modalities
    mods = {"gaia_scalars": m["gaia_scalars"], "gaia_spectrum": m["gaia_spectrum"]}
    sample = {"object_id": "a", "gaia_spectrum": None,
              "gaia_scalars": {"values": np.arange(6, dtype=np.float32), "mask": np.array([0, 0, 0, 1, 0, 0], bool)}}
    b = Collator(mods, 3)([sample, None])
    x = b["gaia_scalars"]
    assert x["values"][0].tolist() == [0, 1, 2, 3, 4, 5] and x["mask"][0].tolist() == [0, 0, 0, 1, 0, 0]
    assert x["present"].tolist() == [True, False, False] and x["mask"][1:].all()
    short = {**sample, "gaia_scalars": {"values": np.zeros(5, np.float32), "mask": np.zeros(5, bool)}}
    with pytest.raises(ValueError, match="'a' has \\(5,\\) values; the config lists 6 features"):
        Collator(mods, 2)([short])


def test_the_star_configs_light_curve_is_the_binned_series_of_a_whole_sector(tmp_path):
    """The config reads the builder's 2-hour bins, and its `length` holds all the bins of a
    sector: the collated input spans the sector's 27 days (the raw cadences would span 10.7 h)."""
    import pandas as pd

    from mmu.builders.tess import Tess, TessConfig
    from mmu.pretrain.config import load_config
    from mmu.pretrain.data import Collator
    from mmu.sim import tess as sim_tess
    from test_builder_helpers import read_all

    m = load_config(STAR_CONFIG).model.modalities["tess_binned_lightcurve"]
    assert m.kind == "lightcurve" and m.bands == ["tess-t"]
    star = pd.DataFrame({"tic_id": [27182818], "ra": [0.0], "dec": [-50.0], "tmag": [12.0],
                         "var_class": ["rotator"], "period": [4.0], "amplitude": [0.01]})
    sim_tess.write_tess(star, tmp_path, np.random.default_rng(0), sectors=(2,))
    b = Tess(TessConfig())
    [item] = b.list_inputs(tmp_path)
    table, rejections = read_all(b, item)
    assert not rejections
    binned = table.column("binned_lightcurve").to_pylist()[0]
    n = len(binned["time"])
    assert 300 < n <= m.length  # every bin of the sector fits
    sample = {"object_id": "27182818", "tess_binned_lightcurve": {
        k: np.asarray(binned[k], np.float32 if k in ("flux", "flux_err") else None) for k in
        ("time", "flux", "flux_err", "mask", "band")}}
    x = Collator({"tess_binned_lightcurve": m}, 1)([sample])["tess_binned_lightcurve"]
    assert x["present"].tolist() == [True] and x["mask"][0, n:].all() and not x["mask"][0, :n].all()
    good = ~x["mask"][0, :n]
    assert float(x["time"][0, :n][good].max()) > 26.0  # days since the first good bin
    assert (x["band"][0, :n] == 1).all()


# ---------------------------------------------------------------- end to end on a star-rich mock


@pytest.mark.slow
def test_star_trimodal_trains_end_to_end_on_a_star_rich_mock(tmp_path, dask_client, torch_one_thread):
    from mmu.engine.build import build
    from mmu.pairing.crossmatch import crossmatch
    from mmu.pretrain import train as T
    from mmu.pretrain.config import load_config
    from mmu.shards.export import export_wds
    from mmu.sim import simulate

    raw, hub = tmp_path / "raw", tmp_path / "hub"
    simulate(raw, progress=False, workers=1, **SIM)
    for name in ("gaia_dr3", "tess_spoc"):
        build(name, raw, hub, client=dask_client)
    crossmatch(["gaia_dr3", "tess_spoc"], hub, "gaia_tess", radius_arcsec=1.0, client=dask_client)
    n = {}
    for split in ("train", "val"):
        ix = export_wds("gaia_tess", hub, tmp_path / "exports" / split, split=split, shard_size="2MiB",
                        shard_multiple=2, client=dask_client, scalars=[f"gaia_scalars={','.join(FEATURES)}"])
        assert ix.modalities["gaia_scalars"] == {"kind": "scalars", "features": FEATURES}
        n[split] = ix.samples
    assert n["train"] >= 48, n
    cfg = load_config(STAR_CONFIG, [f"data.train=[{tmp_path / 'exports' / 'train'}]",
                                    f"data.val=[{tmp_path / 'exports' / 'val'}]", f"run.dir={tmp_path / 'run'}",
                                    "train.steps=40", "train.device=cpu", "data.batch_size=16", "train.log_every=1",
                                    "train.val_every=40", "train.ckpt_every=50", "data.segment_steps=50"])
    summary = T.run_training(cfg)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r.get("loss") is not None]
    assert len(losses) == 40
    # every pair of the three modalities is trained, on every row (each exported star has all three)
    last = [r for r in log if "pairs" in r][-1]
    assert {k: v["n_valid"] for k, v in last["pairs"].items()} == {
        "gaia_spectrum|tess_binned_lightcurve": 16, "gaia_spectrum|gaia_scalars": 16,
        "tess_binned_lightcurve|gaia_scalars": 16}
    # chance level of InfoNCE with 16 rows is ln 16 = 2.77; the last ten steps are clearly below it
    assert np.mean(losses[-10:]) < np.mean(losses[:5]) - 0.3, losses
    assert summary["val"]["val_loss"] < math.log(16)
