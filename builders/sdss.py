"""SDSS DR17 optical spectra from `spec-PLATE-MJD-FIBER.fits` files -> spectrum rows.

Format (SDSS datamodel, BOSS_SPECTRO_REDUX/RUN2D/spectra/PLATE4/spec.html): HDU 1 'COADD' holds
flux, loglam, ivar, and_mask, or_mask, wdisp, sky, model on the native log10(λ/Å) grid (1e-4
dex pixels); HDU 2 holds the object's row of the survey's summary table: 'SPECOBJ' (the specObj
row) in SDSS-I/II files (run2d 26, 103, 104: the SDSS spectrograph, 640 fibres, 3,800-9,200 Å)
and 'SPALL' (the spAll row) in BOSS/eBOSS files (run2d v5_*: the BOSS spectrograph, 1,000
fibres, 3,600-10,400 Å). One raw input is one plate directory (up to ~1000 files), read in
chunks; a bad file is rejected on its own with its name, the rest of the plate is ingested.
"""
from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmu.engine.builder import Builder, BuilderConfig, InputRejected, RawInput, Rejection, register_builder
from mmu.model.schema import SpectrumSpec, spectrum_array

from ._common import (
    RowRejected,
    column_or_null,
    common_columns,
    describe_text,
    download,
    list_links,
    native,
    open_fits,
    require_columns,
    reraise_environment,
)

log = logging.getLogger(__name__)

FILE_RE = re.compile(r"^spec-([0-9]{4,})-([0-9]{5})-([0-9]{4})\.fits$")
LN10 = np.log(10.0)
DLOGLAM = 1e-4  # the SDSS and BOSS coadd pixel, in log10(λ/Å)
# spec-lite files: SDSS-I/II reductions (run2d 26, 103, 104) under sdss/, BOSS/eBOSS (v5_*) under eboss/
ARCHIVE = "https://data.sdss.org/sas/dr17/{tree}/spectro/redux/{run2d}/spectra/lite/"
LEGACY_RUN2D = ("26", "103", "104")
COADD_COLUMNS = ["flux", "loglam", "ivar", "and_mask", "wdisp"]
# HDU 2 by its EXTNAME: BOSS/eBOSS files carry the spAll row, SDSS-I/II files the specObj row
META_HDUS = {"SPALL": "BOSS", "SPECOBJ": "SDSS"}
FIBERS = {"SDSS": 640, "BOSS": 1000}  # fibres per plate of each spectrograph
META_COLUMNS = ["PLATE", "MJD", "FIBERID", "PLUG_RA", "PLUG_DEC", "Z", "Z_ERR", "ZWARNING",
                "CLASS", "SUBCLASS"]
# (HDU 2 column, hub column, Arrow type) riding along; the same names in specObj and spAll
CATALOG = [("PLATE", "plate", pa.int32()), ("MJD", "mjd", pa.int32()), ("FIBERID", "fiberid", pa.int32()),
           ("Z", "z", pa.float64()), ("Z_ERR", "z_err", pa.float64()), ("ZWARNING", "zwarning", pa.int64()),
           ("CLASS", "class", pa.string()), ("SUBCLASS", "subclass", pa.string())]
# null where the file lacks them: SPECBOSS and the *_NOQSO redshift (the one to use for BOSS
# galaxy targets) are spAll columns; SPECPRIMARY is in both
OPTIONAL = [("SPECPRIMARY", "specprimary", pa.int16()), ("SPECBOSS", "specboss", pa.int16()),
            ("SPECOBJID", "specobjid", pa.string()), ("RUN2D", "run2d", pa.string()),
            ("PROGRAMNAME", "programname", pa.string()), ("SN_MEDIAN_ALL", "sn_median_all", pa.float32()),
            ("Z_NOQSO", "z_noqso", pa.float64()), ("Z_ERR_NOQSO", "z_err_noqso", pa.float64()),
            ("ZWARNING_NOQSO", "zwarning_noqso", pa.int64()), ("CLASS_NOQSO", "class_noqso", pa.string())]
# per row: the spectrograph and the wavelength range of the row's pixels
DERIVED = [pa.field("spectrograph", pa.string()), pa.field("lambda_min", pa.float32()),
           pa.field("lambda_max", pa.float32())]


@dataclass(frozen=True)
class SdssConfig(BuilderConfig):
    chunk_files: int = 64  # spectra per Arrow chunk
    wave_range: tuple = (3000.0, 11000.0)  # plausible SDSS/BOSS vacuum Å; outside: a unit error


@register_builder("sdss")
class Sdss(Builder):
    version = "2"  # 2: BOSS/eBOSS files (SPALL), spectrograph and wavelength range, LSF convention
    Config = SdssConfig

    def modalities(self):
        return {"spectrum": SpectrumSpec(None)}  # native grid, length varies per plate

    def extra_columns(self):
        return [pa.field(name, t) for _, name, t in CATALOG + OPTIONAL] + DERIVED

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
                reraise_environment(e)  # a full disk or a denied read fails the build
                problems.append(e)
            if len(good) == self.config.chunk_files:
                yield self._table(good)
                good = []
        if good:
            yield self._table(good)
        if problems and len(problems) == len(item.paths):
            raise InputRejected("; ".join(map(str, problems[:5])) + (f"; and {len(problems) - 5} more"
                                                                   if len(problems) > 5 else ""))
        for e in problems:
            if isinstance(e, RowRejected):
                yield Rejection(item.key, str(e), e.row, e.object_id, e.column, e.file)
            else:
                yield Rejection(item.key, str(e), object_id=_file_id(str(e)))

    def _read_file(self, path) -> dict:
        name = Path(path).name
        hint = "is this a spec (or spec-lite) file from the SDSS archive?"
        with open_fits(path) as hd:
            names = [h.name for h in hd]
            if "COADD" not in names:
                raise InputRejected(f"{name}: HDU 'COADD' missing (found {names}); {hint}")
            coadd = hd["COADD"].data
            require_columns(coadd, COADD_COLUMNS, path, "COADD", hint)
            meta_hdu = next((h for h in META_HDUS if h in names), None)
            if meta_hdu is None:
                raise InputRejected(f"{name}: neither HDU 'SPALL' (BOSS/eBOSS) nor 'SPECOBJ' (SDSS-I/II) "
                                    f"found (found {names}); {hint}")
            spobj = hd[meta_hdu].data
            require_columns(spobj, META_COLUMNS, path, meta_hdu, hint)
            if len(spobj) != 1:
                raise InputRejected(f"{name}: HDU {meta_hdu!r} has {len(spobj)} rows, expected 1")
            try:
                arrays = {c: native(coadd[c]) for c in ("flux", "loglam", "ivar", "and_mask", "wdisp")}
            except (ValueError, TypeError) as e:
                raise InputRejected(f"{name}: HDU 'COADD' unreadable ({e}); re-download it") from None
            bad: dict[int, str] = {}  # a text column whose value is not ASCII
            meta = {name_: column_or_null(spobj, col, t, 1, bad) for col, name_, t in CATALOG + OPTIONAL}
            if bad:
                col = bad[0]
                oid = "-".join(f"{int(np.asarray(spobj[c])[0]):0{w}d}" for c, w in
                               (("PLATE", 4), ("MJD", 5), ("FIBERID", 4)))
                raise RowRejected(f"{name} HDU {meta_hdu!r} row 0 column {col}: "
                                  f"{describe_text(np.asarray(spobj[col])[0])}", file=name, row=0,
                                  object_id=oid, column=col.lower())
            ra, dec = float(spobj["PLUG_RA"][0]), float(spobj["PLUG_DEC"][0])
            run2d = meta["run2d"][0].as_py() or str(hd[0].header.get("RUN2D", "")).strip()
        spectrograph = _spectrograph(run2d, meta_hdu)
        plate, mjd, fiber = (int(spobj[c][0]) for c in ("PLATE", "MJD", "FIBERID"))
        if not 1 <= fiber <= FIBERS[spectrograph]:
            raise InputRejected(f"{name}: FIBERID {fiber} outside 1-{FIBERS[spectrograph]}, the fibres of a "
                                f"{spectrograph} plate (run2d {run2d or '?'}, HDU {meta_hdu!r})")
        lam = 10.0 ** arrays["loglam"].astype(np.float64)
        lo, hi = self.config.wave_range
        if len(lam) == 0:
            raise InputRejected(f"{name}: HDU 'COADD' has no pixels")
        if np.nanmin(lam) < lo or np.nanmax(lam) > hi:
            raise InputRejected(f"{name}: 10**loglam spans {np.nanmin(lam):.4g}-{np.nanmax(lam):.4g}, outside "
                                f"{lo:g}-{hi:g} Å; loglam must be log10(vacuum wavelength / Å)")
        # wdisp is the sigma of the Gaussian LSF in 1e-4 dex pixels (dλ = λ ln(10) 1e-4), fitted
        # without the pixel's own width; lsf_sigma includes it (docs/schema.md): σ² + 1/12 px²
        wdisp = arrays["wdisp"].astype(np.float64)
        lsf = np.sqrt(wdisp * wdisp + 1.0 / 12.0) * DLOGLAM * LN10 * lam
        mask = (arrays["and_mask"] != 0) | (arrays["ivar"] <= 0)
        return {"object_id": f"{plate:04d}-{mjd:05d}-{fiber:04d}", "ra": ra, "dec": dec,
                "lambda": lam.astype(np.float32), "flux": arrays["flux"], "ivar": arrays["ivar"],
                "mask": mask, "lsf_sigma": lsf.astype(np.float32), "meta": meta,
                "spectrograph": spectrograph, "lambda_min": float(np.nanmin(lam)),
                "lambda_max": float(np.nanmax(lam))}

    @staticmethod
    def _table(rows: list[dict]) -> pa.Table:
        cols = common_columns([r["object_id"] for r in rows], [r["ra"] for r in rows],
                              [r["dec"] for r in rows], "sdss", "dr17")
        cols["spectrum"] = spectrum_array(SpectrumSpec(None), *([r[k] for r in rows] for k in
                                          ("lambda", "flux", "ivar", "mask", "lsf_sigma")))
        for _, name, t in CATALOG + OPTIONAL:
            cols[name] = pa.concat_arrays([r["meta"][name] for r in rows]).cast(t)
        cols["spectrograph"] = pa.array([r["spectrograph"] for r in rows], pa.string())
        for k in ("lambda_min", "lambda_max"):
            cols[k] = pa.array(np.array([r[k] for r in rows], np.float32))
        return pa.table(cols)

    def fetch(self, raw, limit=None, run2d: str = "26"):
        """Download spec-lite files plate by plate from the DR17 SAS (`limit` files). run2d 26
        (default), 103, 104: the SDSS-I/II spectra (HDU SPECOBJ), into
        RAW/sdss/dr17/spectra/<plate>/; v5_13_2 (or another v5_* reduction): the BOSS/eBOSS
        spectra (HDU SPALL), into RAW/sdss/dr17/eboss/spectro/redux/<run2d>/spectra/lite/<plate>/,
        the SAS layout, so that two reductions of one plate stay apart. `read` takes both."""
        run2d = str(run2d)
        if run2d not in LEGACY_RUN2D and not re.fullmatch(r"v5_[0-9]+_[0-9]+", run2d):
            raise ValueError(f"run2d {run2d!r} is not a DR17 optical reduction: use 26, 103 or 104 "
                             "(SDSS-I/II) or v5_13_2 (BOSS/eBOSS; also v5_13_0, v5_10_0)")
        tree = "sdss" if run2d in LEGACY_RUN2D else "eboss"
        base = ARCHIVE.format(tree=tree, run2d=run2d)
        dest = (Path(raw) / "sdss/dr17/spectra" if tree == "sdss"
                else Path(raw) / "sdss/dr17/eboss/spectro/redux" / run2d / "spectra/lite")
        if tree == "eboss":
            log.info("run2d %s is a BOSS/eBOSS reduction (HDU SPALL, 1,000 fibres per plate); "
                     "files go to %s", run2d, dest)
        got = []
        for plate in list_links(base, r"[0-9]{4,}/"):
            for name in list_links(base + plate, r"spec-[0-9-]+\.fits"):
                got.append(download(base + plate + name, dest / plate / name))
                if limit and len(got) >= limit:
                    return got
        return got


def _spectrograph(run2d: str, meta_hdu: str) -> str:
    """SDSS or BOSS: by the reduction (run2d 26/103/104 are SDSS-I/II, v5_* BOSS/eBOSS), else by
    which summary table HDU 2 is."""
    run2d = (run2d or "").strip()
    if run2d in LEGACY_RUN2D:
        return "SDSS"
    if run2d.startswith("v5"):
        return "BOSS"
    return META_HDUS[meta_hdu]


def _file_id(reason: str) -> str | None:
    m = re.match(r"spec-([0-9]{4,})-([0-9]{5})-([0-9]{4})\.fits", reason)
    return "-".join(m.groups()) if m else None
