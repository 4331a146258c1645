"""The encoders' input normalisation (`mmu.pretrain.preprocess`), used by training and eval alike."""
from __future__ import annotations

import math

import torch

from mmu.pretrain.preprocess import normalize_image


def _cutout(fluxes, ivars, size=8):
    c = len(fluxes)
    flux = torch.tensor(fluxes, dtype=torch.float32)[:, None, None].expand(c, size, size).clone()
    ivar = torch.tensor(ivars, dtype=torch.float32)[:, None, None].expand(c, size, size).clone()
    return flux, ivar


def test_image_normalisation_keeps_colours_across_depths():
    """The same source on two bricks of different depth per band: sinh of the normalised pixels
    keeps the flux ratios between bands (the colours) exactly, for both; only the overall scale
    (the source's S/N) differs. A per-band noise scale would make them differ by the depths."""
    fluxes = [0.1, 0.2, 0.3, 0.4]  # nanomaggies
    shallow = _cutout(fluxes, [100.0, 400.0, 25.0, 4.0])
    deep = _cutout(fluxes, [900.0, 100.0, 400.0, 100.0])
    batch = {"flux": torch.stack([shallow[0], deep[0]]), "ivar": torch.stack([shallow[1], deep[1]]),
             "mask": torch.zeros(2, 4, 8, 8, dtype=torch.bool)}
    px = normalize_image(batch)["pixels"][:, :, 0, 0].double()
    for row, ivars in zip(px, ([100.0, 400.0, 25.0, 4.0], [900.0, 100.0, 400.0, 100.0])):
        ratios = (row.sinh() / row[1].sinh()).tolist()
        assert ratios == [pytest_approx(f / fluxes[1], rel=1e-5) for f in fluxes]
        # the one scale: geometric mean over bands of sigma_band = ivar^-1/2
        sigma = math.exp(sum(-0.5 * math.log(v) for v in ivars) / 4)
        assert float(row[1]) == pytest_approx(math.asinh(fluxes[1] / sigma), rel=1e-5)


def test_image_normalisation_ignores_empty_bands_and_bad_pixels():
    flux, ivar = _cutout([1.0, 2.0, 3.0, 4.0], [4.0, 4.0, 4.0, 0.0])  # z band: no data at all
    mask = torch.zeros(4, 8, 8, dtype=torch.bool)
    mask[0, 0, 0] = True  # one bad g pixel
    flux[0, 0, 0] = float("nan")
    px = normalize_image({"flux": flux[None], "ivar": ivar[None], "mask": mask[None]})["pixels"][0]
    assert torch.isfinite(px).all()
    assert float(px[0, 0, 0]) == 0.0 and float(px[3].abs().max()) == 0.0
    # sigma from the three bands with data only: 4^-1/2 = 0.5
    assert float(px[1, 3, 3]) == pytest_approx(math.asinh(2.0 / 0.5), rel=1e-6)


def pytest_approx(v, rel=1e-6):
    import pytest

    return pytest.approx(v, rel=rel)
