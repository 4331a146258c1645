"""Figures of standardized rows: image bands as an RGB composite, spectra with masked pixels
shaded, light curves per band, and a paired object's image next to its spectrum.

    python -m mmu.demo.plots HUB PAIRED_NAME [--object ID] --out pair.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def rgb_composite(flux: np.ndarray, bands: list[str], mask: np.ndarray | None = None) -> np.ndarray:
    """An asinh (Lupton et al. 2004) RGB image from [C,H,W] flux; the reddest band is red.

    Args:
        flux: [C, H, W] image (non-finite values count as 0).
        bands: the C band names (bluest first).
        mask: [C, H, W] booleans, True where a pixel is bad (set to 0).

    Returns:
        [H, W, 3] uint8 RGB (4 bands: (z+i)/2, r, g), scaled to the 99.5th percentile.
    """
    from astropy.visualization import make_lupton_rgb

    flux = np.where(np.isfinite(flux), flux, 0.0)
    if mask is not None:
        flux = np.where(mask, 0.0, flux)
    c = flux.shape[0]
    idx = [min(c - 1, 2), min(c - 1, 1), 0] if c >= 3 else [c - 1] * 3
    if c >= 4:  # g r i z -> (z+i)/2, r, g
        r, g, b = 0.5 * (flux[3] + flux[2]), flux[1], flux[0]
    else:
        r, g, b = (flux[i] for i in idx)
    scale = np.nanpercentile(np.abs(np.stack([r, g, b])), 99.5) or 1.0
    return make_lupton_rgb(r / scale, g / scale, b / scale, stretch=0.5, Q=8, minimum=0.0)


def plot_spectrum(ax, lam, flux, mask, label=None, smooth: int = 5):
    """Draw a spectrum on matplotlib axes `ax`: masked pixels left out of a boxcar smoothing of
    `smooth` pixels and shaded red.

    Args:
        ax: matplotlib axes.
        lam: vacuum wavelengths [Å].
        flux: flux [1e-17 erg/s/cm²/Å].
        mask: True where a pixel is bad.
        label: legend label.
        smooth: boxcar width in pixels (1: none).
    """
    lam, flux, mask = np.asarray(lam), np.asarray(flux, float), np.asarray(mask, bool)
    shown = np.where(mask, np.nan, flux)
    if smooth > 1:
        kernel = np.ones(smooth) / smooth
        good = np.convolve(np.nan_to_num(shown), kernel, "same")
        norm = np.convolve(np.isfinite(shown).astype(float), kernel, "same")
        shown = np.where(norm > 0, good / np.maximum(norm, 1e-9), np.nan)
    ax.plot(lam, shown, lw=0.7, color="k", label=label)
    if mask.any():  # shade masked runs
        edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(int), 0]))
        for a, b in zip(edges[::2], edges[1::2], strict=False):
            ax.axvspan(lam[a], lam[min(b, len(lam) - 1)], color="tab:red", alpha=0.15, lw=0)
    ax.set_xlabel("vacuum wavelength [Å]")
    ax.set_ylabel(r"flux [$10^{-17}$ erg s$^{-1}$ cm$^{-2}$ Å$^{-1}$]")


BAND_COLORS = {"u": "tab:purple", "g": "tab:blue", "r": "tab:green", "i": "tab:orange",
               "z": "tab:red", "y": "tab:brown"}


def plot_lightcurve(ax, time, band, flux, flux_err, mask):
    """Draw a light curve on `ax`: one colour per band, error bars, masked points left out."""
    time, flux, flux_err = np.asarray(time), np.asarray(flux), np.asarray(flux_err)
    band, mask = np.asarray(band).astype(str), np.asarray(mask, bool)
    for b in sorted(set(band)):
        sel = (band == b) & ~mask
        ax.errorbar(time[sel], flux[sel], flux_err[sel], fmt="o", ms=3, lw=0.8,
                    color=BAND_COLORS.get(b.split("-")[-1], None), label=b)
    ax.set_xlabel("MJD")
    ax.set_ylabel("flux")
    ax.legend(fontsize=7, ncol=3)


def plot_pair(row: dict, image_col: str, spectrum_col: str, out: str | Path, title: str = ""):
    """Save a figure of one paired object: its image cutout next to its spectrum.

    Args:
        row: a row of a paired catalog (as `pyarrow.Table.to_pylist` gives it).
        image_col: its image modality column.
        spectrum_col: its spectrum modality column.
        out: the PNG file to write.
        title: the figure's title (default: the object id).

    Returns:
        `out`.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, spec = row[image_col], row[spectrum_col]
    flux = np.asarray(img["flux"], np.float32)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 2.6]})
    axes[0].imshow(rgb_composite(flux, img["band"], np.asarray(img["mask"], bool)), origin="lower")
    n = flux.shape[-1]
    axes[0].set_title(f"{image_col}: {', '.join(img['band'])}\n{n}×{n} px at {img['scale']:.3f}″/px", fontsize=8)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    plot_spectrum(axes[1], spec["lambda"], spec["flux"], spec["mask"])
    axes[1].set_title(f"{spectrum_col} (masked pixels shaded)", fontsize=8)
    fig.suptitle(title or row.get("object_id", ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    """``python -m mmu.demo.plots HUB NAME --out PNG``: plot one paired object; prints the path."""
    import pyarrow.dataset as ds

    from mmu.hub.layout import catalog_dir, read_manifest
    from mmu.model.schema import ImageSpec, SpectrumSpec, modalities_of

    p = argparse.ArgumentParser(prog="python -m mmu.demo.plots",
                                description="Plot one paired object's image and spectrum.")
    p.add_argument("hub")
    p.add_argument("name", help="a paired catalog with an image and a spectrum column")
    p.add_argument("--object", default=None, help="object_id (default: the first row with no masked spectrum pixels)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    read_manifest(args.hub, args.name)
    data = ds.dataset(catalog_dir(args.hub, args.name) / "dataset", format="parquet", partitioning="hive")
    mods = modalities_of(data.schema)
    image_col = next((k for k, v in mods.items() if isinstance(v, ImageSpec)), None)
    spectrum_col = next((k for k, v in mods.items() if isinstance(v, SpectrumSpec)), None)
    if image_col is None or spectrum_col is None:
        p.error(f"{args.name} has no image and spectrum columns (its modalities: {', '.join(mods) or 'none'})")
    object_id = args.object or _brightest_spectrum(data, spectrum_col)  # read in batches, not whole
    found = data.to_table(filter=ds.field("object_id") == object_id).to_pylist() if object_id else []
    if not found:
        p.error(f"no object {object_id!r} in {args.name}" if args.object else f"{args.name} has no rows")
    row = found[0]
    z = row.get(spectrum_col.rsplit("_", 1)[0] + "_z") if "_" in spectrum_col else row.get("z")
    title = (f"{row['object_id']}  (ra {row['ra']:.5f}, dec {row['dec']:.5f}"
             + (f", z = {z:.3f})" if z is not None else ")"))
    plot_pair(row, image_col, spectrum_col, args.out, title)
    print(args.out)
    return 0


def _brightest_spectrum(data, spectrum_col: str) -> str | None:
    """The object_id of the row with the highest median spectrum flux, read batch by batch (only
    the ids and the flux field): memory bounded by one batch, whatever the catalog's size."""
    import pyarrow.dataset as ds

    best, best_id = -np.inf, None
    for batch in data.to_batches(columns={"object_id": ds.field("object_id"),
                                          "flux": ds.field(spectrum_col, "flux")}, batch_size=4096):
        ids = batch.column(0).to_pylist()
        for oid, flux in zip(ids, batch.column(1).to_numpy(zero_copy_only=False), strict=True):
            if flux is None or not len(flux):
                continue
            with np.errstate(all="ignore"):
                m = np.nanmedian(np.asarray(flux, float))
            if np.isfinite(m) and m > best:
                best, best_id = m, oid
    return best_id


if __name__ == "__main__":
    raise SystemExit(main())
