"""A small builder used by the engine tests: FITS binary tables of fixed-grid spectra.

Each input is one `spectra-*.fits` file whose HDU 'SPECTRA' has columns ID, RA, DEC, MAG,
FLUX[N], IVAR[N]; the wavelength grid is the 'WAVE' HDU. It exercises the engine exactly as a
survey builder does (chunks, row rejections, whole-input rejections), on files the tests write.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from astropy.io import fits

from mmu.engine.builder import Builder, BuilderConfig, InputRejected, RawInput
from mmu.model.schema import SpectrumSpec, spectrum_array

NPIX = 64


@dataclass(frozen=True)
class TestSpectraConfig(BuilderConfig):
    __test__ = False
    chunk_rows: int = 7
    sleep_s: float = 0.0  # per chunk; lets tests kill a build mid-way
    survey: str = "testsurvey"
    glob: str = "spectra-*.fits"
    with_shape: bool = False  # galaxies with Tractor-style shape_r/e1/e2 (for host association)
    hog_mb: int = 0  # reading an input named `hog_input` first touches this many MiB and holds them
    hog_input: str = ""  # (lets a test run a worker out of memory for real)
    hog_s: float = 10.0


class TestSpectra(Builder):  # not a test class: pytest must not collect it
    __test__ = False
    name = "testspectra"
    version = "1"
    Config = TestSpectraConfig

    def modalities(self):
        return {"spectrum": SpectrumSpec(NPIX)}

    def extra_columns(self):
        shape = [pa.field(c, pa.float32()) for c in ("shape_r", "shape_e1", "shape_e2")]
        return [pa.field("mag", pa.float32())] + (shape if self.config.with_shape else [])

    def list_inputs(self, raw):
        return [RawInput(p.relative_to(raw).as_posix(), (str(p),))
                for p in sorted(Path(raw).rglob(self.config.glob))]

    def read(self, item):
        path = item.paths[0]
        if self.config.hog_mb and Path(path).name == self.config.hog_input:
            hog = np.ones(self.config.hog_mb * 2**20 // 8)  # touched pages: resident memory
            time.sleep(self.config.hog_s)  # the nanny's memory monitor sees it and kills the worker
            del hog
        with fits.open(path, memmap=False) as hdul:
            names = [h.name for h in hdul]
            for need in ("SPECTRA", "WAVE"):
                if need not in names:
                    raise InputRejected(f"{Path(path).name}: HDU {need!r} missing (found {names})")
            data = hdul["SPECTRA"].data
            wave = np.asarray(hdul["WAVE"].data, np.float32)
            for col in ("ID", "RA", "DEC", "MAG", "FLUX", "IVAR"):
                if col not in data.columns.names:
                    raise InputRejected(f"{Path(path).name}: HDU 'SPECTRA' missing column {col!r}")
            n = len(data)
            for s in range(0, n, self.config.chunk_rows):
                if self.config.sleep_s:
                    time.sleep(self.config.sleep_s)
                d = data[s:s + self.config.chunk_rows]
                m = len(d)
                flux = np.asarray(d["FLUX"], np.float32)
                ivar = np.asarray(d["IVAR"], np.float32)
                spec = spectrum_array(SpectrumSpec(NPIX), np.tile(wave, (m, 1)), flux, ivar,
                                      ivar <= 0, np.full((m, NPIX), 1.0, np.float32))
                shape = {c.lower(): pa.array(np.asarray(d[c], np.float32))
                         for c in ("SHAPE_R", "SHAPE_E1", "SHAPE_E2") if self.config.with_shape}
                yield pa.table({**shape,
                    "object_id": pa.array([str(x) for x in d["ID"]]),
                    "ra": pa.array(np.asarray(d["RA"], float)),
                    "dec": pa.array(np.asarray(d["DEC"], float)),
                    "survey": pa.array([self.config.survey] * m),
                    "release": pa.array(["v1"] * m),
                    "spectrum": spec,
                    "mag": pa.array(np.asarray(d["MAG"], np.float32)),
                })


def write_spectra_file(path: Path, ids, ra, dec, seed=0, drop_column=None, nan_flux_row=None,
                       zero_ivar_row=None, shape=None):
    rng = np.random.default_rng(seed)
    n = len(ids)
    flux = rng.normal(10, 1, (n, NPIX)).astype(np.float32)
    if nan_flux_row is not None:
        flux[nan_flux_row, 5] = np.nan
    ivar = np.ones((n, NPIX), np.float32)
    if zero_ivar_row is not None:
        ivar[zero_ivar_row] = 0
    cols = {"ID": fits.Column("ID", "K", array=np.asarray(ids, np.int64)),
            "RA": fits.Column("RA", "D", array=ra), "DEC": fits.Column("DEC", "D", array=dec),
            "MAG": fits.Column("MAG", "E", array=rng.uniform(17, 22, n)),
            "FLUX": fits.Column("FLUX", f"{NPIX}E", array=flux),
            "IVAR": fits.Column("IVAR", f"{NPIX}E", array=ivar)}
    if shape is not None:
        for name, values in zip(("SHAPE_R", "SHAPE_E1", "SHAPE_E2"), shape):
            cols[name] = fits.Column(name, "E", array=np.asarray(values, np.float32))
    if drop_column:
        cols.pop(drop_column)
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(list(cols.values()), name="SPECTRA"),
                         fits.ImageHDU(np.linspace(4000, 8000, NPIX).astype(np.float32), name="WAVE")])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    hdus.writeto(path, overwrite=True)
