"""The mock observatory is a pure function of its arguments: same seed, same bytes."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from mmu.sim.footprint import (
    MIN_FIELD_SEPARATION_DEG,
    angular_separation_deg,
    brick_index,
    brick_info,
    field_centres,
    healpix_nest,
    parse_footprint,
)


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _run(root, seed, workers=1):
    from mmu.sim import simulate

    return simulate(root, galaxies=40, transients=6, seed=seed, footprint="fields:2", workers=workers,
                    progress=False)


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path):
    m1 = _run(tmp_path / "a", 5)
    m2 = _run(tmp_path / "b", 5)
    d1, d2 = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert d1 == d2 and len(d1) > 20
    assert m1 == m2 == json.loads((tmp_path / "a" / "mmu-sim.json").read_text())
    m3 = _run(tmp_path / "c", 6)
    assert m3["content_sha256"] != m1["content_sha256"]


@pytest.mark.slow
def test_worker_count_does_not_change_the_output(tmp_path):
    m1 = _run(tmp_path / "one", 9, workers=1)
    m2 = _run(tmp_path / "two", 9, workers=2)
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")
    assert m1["content_sha256"] == m2["content_sha256"]


def test_default_footprint_spreads_over_healpix_order4_cells():
    fp = parse_footprint(None, 1000)
    assert fp.kind == "fields" and fp.n_fields >= 12
    centres = field_centres(0, fp.n_fields)
    sep = angular_separation_deg(centres[:, None, 0], centres[:, None, 1], centres[None, :, 0], centres[None, :, 1])
    assert np.min(sep[~np.eye(len(centres), dtype=bool)]) > MIN_FIELD_SEPARATION_DEG
    assert len(set(healpix_nest(centres[:, 0], centres[:, 1], 4))) == fp.n_fields
    np.testing.assert_array_equal(centres, field_centres(0, fp.n_fields))


def test_footprint_errors_say_what_to_do():
    with pytest.raises(ValueError, match="uniform:RA0,RA1,DEC0,DEC1"):
        parse_footprint("uniform:1,2", 10)
    with pytest.raises(ValueError, match="fields:N"):
        parse_footprint("everywhere", 10)


def test_brick_names_encode_their_centres():
    ra = np.array([0.1, 112.6, 359.9, 200.0])
    dec = np.array([-0.2, 22.2, 31.9, -64.9])
    row, col = brick_index(ra, dec)
    info = brick_info(row, col)
    for k in range(len(ra)):
        name = info["brickname"][k]
        assert name[:4] == f"{int(np.floor(info['ra'][k] * 10 + 1e-6)):04d}"
        assert name[4] == ("p" if info["dec"][k] >= 0 else "m")
        assert name[5:] == f"{int(np.floor(abs(info['dec'][k]) * 10 + 1e-6)):03d}"
        assert info["ra1"][k] <= ra[k] < info["ra2"][k] and info["dec1"][k] <= dec[k] < info["dec2"][k]
    assert 1 <= info["brickid"].min() and info["brickid"].max() < 2**20  # fits desitarget's 20 bits
