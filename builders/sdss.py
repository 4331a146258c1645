"""SDSS DR17 optical spectra from `spec-PLATE-MJD-FIBER.fits` files -> spectrum rows.

Format (SDSS datamodel, BOSS_SPECTRO_REDUX/RUN2D/spectra/PLATE4/spec.html): HDU 'COADD' holds
flux, loglam, ivar, and_mask, or_mask, wdisp, sky, model on the native log10(λ/Å) grid (1e-4
dex pixels); HDU 'SPECOBJ' holds the plate/MJD/fiber, plug position, redshift and class. One raw
input is one plate directory (up to ~1000 files), read in chunks; a bad file is rejected on its
own with its name, the rest of the plate is ingested.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ._common import (column_or_null, common_columns, download, list_links, native, open_fits,
                              report, require_columns, require_hdu)
from mmu.engine.builder import Builder, BuilderConfig, InputRejected, RawInput, Rejection, register_builder
from mmu.model.schema import SpectrumSpec, spectrum_array

FILE_RE = re.compile(r"^spec-([0-9]{4,})-([0-9]{5})-([0-9]{4})\.fits$")
LN10 = np.log(10.0)
# spec-lite files: SDSS-I/II reductions (run2d 26, 103, 104) under sdss/, BOSS/eBOSS (v5_*) under eboss/
ARCHIVE = "https://data.sdss.org/sas/dr17/{tree}/spectro/redux/{run2d}/spectra/lite/"
LEGACY_RUN2D = ("26", "103", "104")
COADD_COLUMNS = ["flux", "loglam", "ivar", "and_mask", "wdisp"]
SPECOBJ_COLUMNS = ["PLATE", "MJD", "FIBERID", "PLUG_RA", "PLUG_DEC", "Z", "Z_ERR", "ZWARNING",
                   "CLASS", "SUBCLASS"]
# (SPECOBJ column, hub column, Arrow type) riding along
CATALOG = [("PLATE", "plate", pa.int32()), ("MJD", "mjd", pa.int32()), ("FIBERID", "fiberid", pa.int32()),
           ("Z", "z", pa.float64()), ("Z_ERR", "z_err", pa.float64()), ("ZWARNING", "zwarning", pa.int64()),
           ("CLASS", "class", pa.string()), ("SUBCLASS", "subclass", pa.string())]
OPTIONAL = [("SPECPRIMARY", "specprimary", pa.int16()), ("SPECOBJID", "specobjid", pa.string()),
            ("RUN2D", "run2d", pa.string()), ("SN_MEDIAN_ALL", "sn_median_all", pa.float32())]


@dataclass(frozen=True)
class SdssConfig(BuilderConfig):
    chunk_files: int = 64  # spectra per Arrow chunk
    wave_range: tuple = (3000.0, 11000.0)  # plausible SDSS/BOSS vacuum Å; outside: a unit error


@register_builder("sdss")
class Sdss(Builder):
    version = "1"
    Config = SdssConfig

    def modalities(self):
        return {"spectrum": SpectrumSpec(None)}  # native grid, length varies per plate

    def extra_columns(self):
        return [pa.field(name, t) for _, name, t in CATALOG + OPTIONAL]

    def list_inputs(self, raw):
        plates: dict[Path, list[str]] = defaultdict(list)
        for p in Path(raw).rglob("spec-*.fits"):
            if FILE_RE.match(p.name):
                plates[p.parent].append(str(p))
        return [RawInput(d.relative_to(raw).as_posix() if d != Path(raw) else ".", tuple(sorted(files)))
                for d, files in sorted(plates.items())]

    def read(self, item):
        good, problems = [], []
        for path in item.paths:
            try:
                good.append(self._read_file(path))
            except InputRejected as e:
                problems.append(str(e))
            if len(good) == self.config.chunk_files:
                yield self._table(good)
                good = []
        if good:
            yield self._table(good)
        if problems and len(problems) == len(item.paths):
            raise InputRejected("; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                                          if len(problems) > 5 else ""))
        for reason in problems:
            yield Rejection(item.key, reason, object_id=_file_id(reason))

    def _read_file(self, path) -> dict:
        name = Path(path).name
        hint = "is this a spec (or spec-lite) file from the SDSS archive?"
        with open_fits(path) as hd:
            coadd = require_hdu(hd, "COADD", path, hint).data
            require_columns(coadd, COADD_COLUMNS, path, "COADD", hint)
            spobj = require_hdu(hd, "SPECOBJ", path, hint).data
            require_columns(spobj, SPECOBJ_COLUMNS, path, "SPECOBJ", hint)
            if len(spobj) != 1:
                raise InputRejected(f"{name}: HDU 'SPECOBJ' has {len(spobj)} rows, expected 1")
            try:
                arrays = {c: native(coadd[c]) for c in ("flux", "loglam", "ivar", "and_mask", "wdisp")}
            except (ValueError, TypeError) as e:
                raise InputRejected(f"{name}: HDU 'COADD' unreadable ({e}); re-download it") from None
            meta = {name_: column_or_null(spobj, col, t, 1) for col, name_, t in CATALOG + OPTIONAL}
            ra, dec = float(spobj["PLUG_RA"][0]), float(spobj["PLUG_DEC"][0])
        lam = 10.0 ** arrays["loglam"].astype(np.float64)
        lo, hi = self.config.wave_range
        if len(lam) == 0:
            raise InputRejected(f"{name}: HDU 'COADD' has no pixels")
        if np.nanmin(lam) < lo or np.nanmax(lam) > hi:
            raise InputRejected(f"{name}: 10**loglam spans {np.nanmin(lam):.4g}-{np.nanmax(lam):.4g}, outside "
                                f"{lo:g}-{hi:g} Å; loglam must be log10(vacuum wavelength / Å)")
        # wdisp is the LSF sigma in units of the 1e-4 dex pixel: dλ = λ ln(10) 1e-4 per pixel
        lsf = arrays["wdisp"].astype(np.float64) * 1e-4 * LN10 * lam
        mask = (arrays["and_mask"] != 0) | (arrays["ivar"] <= 0)
        plate, mjd, fiber = (int(spobj[c][0]) for c in ("PLATE", "MJD", "FIBERID"))
        return {"object_id": f"{plate:04d}-{mjd:05d}-{fiber:04d}", "ra": ra, "dec": dec,
                "lambda": lam.astype(np.float32), "flux": arrays["flux"], "ivar": arrays["ivar"],
                "mask": mask, "lsf_sigma": lsf.astype(np.float32), "meta": meta}

    @staticmethod
    def _table(rows: list[dict]) -> pa.Table:
        cols = common_columns([r["object_id"] for r in rows], [r["ra"] for r in rows],
                              [r["dec"] for r in rows], "sdss", "dr17")
        cols["spectrum"] = spectrum_array(SpectrumSpec(None), *([r[k] for r in rows] for k in
                                          ("lambda", "flux", "ivar", "mask", "lsf_sigma")))
        for _, name, t in CATALOG + OPTIONAL:
            cols[name] = pa.concat_arrays([r["meta"][name] for r in rows]).cast(t)
        return pa.table(cols)

    def fetch(self, raw, limit=None, run2d: str = "26"):
        """Download spec-lite files plate by plate from the DR17 SAS (`limit` files) into
        RAW/sdss/dr17/spectra/<plate>/. run2d 26 (default), 103, 104: the SDSS-I/II spectra, whose
        metadata HDU is SPECOBJ (what `read` expects); v5_13_2: BOSS/eBOSS, whose files carry
        SPALL instead."""
        tree = "sdss" if str(run2d) in LEGACY_RUN2D else "eboss"
        if tree == "eboss":
            report("note", text=f"run2d {run2d} is a BOSS/eBOSS reduction; its spec files carry an SPALL "
                                "HDU, and the sdss builder reads SDSS-I/II files (SPECOBJ): `mmu build` "
                                "will reject them")
        base = ARCHIVE.format(tree=tree, run2d=run2d)
        got = []
        for plate in list_links(base, r"[0-9]{4,}/"):
            for name in list_links(base + plate, r"spec-[0-9-]+\.fits"):
                got.append(download(base + plate + name, Path(raw) / "sdss/dr17/spectra" / plate / name))
                if limit and len(got) >= limit:
                    return got
        return got


def _file_id(reason: str) -> str | None:
    m = re.match(r"spec-([0-9]{4,})-([0-9]{5})-([0-9]{4})\.fits", reason)
    return "-".join(m.groups()) if m else None
