"""DESI DR1 healpix coadds -> spectrum rows: B/R/Z arms merged on one 0.8 Å grid, with the
Redrock redshift joined on TARGETID and a `primary` flag for targets seen in several coadds.

Format: desidatamodel `healpix/SURVEY/PROGRAM/PIXGROUP/PIXNUM/coadd-SURVEY-PROGRAM-PIXNUM.fits`
(FIBERMAP, {B,R,Z}_{WAVELENGTH,FLUX,IVAR,MASK,RESOLUTION}, SCORES) and `redrock-*.fits`
(REDSHIFTS, TSNR2). One raw input is one HEALPix pixel: every survey/program coadd of that pixel
is read together, so the primary choice among a TARGETID's repeats is made inside one input.
"""
from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmu.engine.builder import Builder, BuilderConfig, InputRejected, RawInput, Rejection, register_builder
from mmu.model.schema import SpectrumSpec, spectrum_array

from ._common import (
    column_or_null,
    common_columns,
    decode_text,
    describe_text,
    download,
    has_column,
    list_links,
    native,
    open_fits,
    require_columns,
    require_hdu,
    reraise_environment,
)

WAVE_MIN, WAVE_STEP, NPIX = 3600.0, 0.8, 7781  # 3600 .. 9824 Å, the common DESI coadd grid
GRID = WAVE_MIN + WAVE_STEP * np.arange(NPIX)
ARMS = ("B", "R", "Z")
FILE_RE = re.compile(r"^(coadd|redrock)-([a-z0-9]+)-([a-z0-9]+)-([0-9]+)\.fits(\.gz)?$")
ARCHIVE = "https://data.desi.lbl.gov/public/dr1/spectro/redux/{specprod}/healpix/"

# (FITS column, hub column, Arrow type); REDSHIFTS and FIBERMAP columns that ride along
REDSHIFT_COLUMNS = [("Z", "z", pa.float64()), ("ZERR", "zerr", pa.float64()),
                    ("ZWARN", "zwarn", pa.int64()), ("SPECTYPE", "spectype", pa.string()),
                    ("SUBTYPE", "subtype", pa.string()), ("DELTACHI2", "deltachi2", pa.float64())]
OPTIONAL_REDSHIFT = [("CHI2", "chi2", pa.float64()), ("NPIXELS", "npixels", pa.int64())]
FIBERMAP_COLUMNS = [("COADD_FIBERSTATUS", "coadd_fiberstatus", pa.int64()),
                    ("OBJTYPE", "objtype", pa.string()), ("EBV", "ebv", pa.float32()),
                    ("FLUX_G", "flux_g", pa.float32()), ("FLUX_R", "flux_r", pa.float32()),
                    ("FLUX_Z", "flux_z", pa.float32()), ("DESI_TARGET", "desi_target", pa.int64()),
                    ("BGS_TARGET", "bgs_target", pa.int64()), ("MWS_TARGET", "mws_target", pa.int64())]
REQUIRED_REDSHIFTS = ["TARGETID"] + [c for c, _, _ in REDSHIFT_COLUMNS]
_LAMBDA_ROWS = np.empty((0, NPIX), np.float32)  # GRID repeated per row, shared (read-only) by chunks


def _lambda_rows(m: int) -> np.ndarray:
    """GRID (float32) as m contiguous rows: Arrow wraps it without a copy, where a broadcast view
    would be copied row by row into every chunk."""
    global _LAMBDA_ROWS
    rows = _LAMBDA_ROWS  # one read: another thread may replace the cache meanwhile
    if len(rows) < m:
        rows = np.tile(GRID.astype(np.float32), (m, 1))
        rows.flags.writeable = False
        _LAMBDA_ROWS = rows
    return rows[:m]


@dataclass(frozen=True)
class DesiConfig(BuilderConfig):
    specprod: str = "iron"
    chunk_rows: int = 128  # spectra per Arrow chunk (bounds memory: ~45 MB of arm data)


def lsf_sigma_pixels(resolution: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel LSF sigma (in pixels) from DESI resolution diagonals [n, ndiag, nwave].

    Row i of the matrix (desispec.resolution.Resolution: offsets ndiag//2 .. -ndiag//2,
    scipy dia convention R[i, i+d] = data[k, i+d]) is the kernel of output pixel i; sigma is the
    square root of its second central moment. With `scale` [nwave] (the pixel width in Å) the
    result is multiplied by it: sigma in Å.

    `resolution` may be float32 in any byte order: each diagonal is converted to float64 as it is
    summed (the products by the integer offsets are exact in float64, and the sums run in the
    diagonals' order), so no float64 copy of the whole matrix is made.
    """
    n, ndiag, nwave = resolution.shape
    half = ndiag // 2
    wsum = np.zeros((n, nwave))
    m1 = np.zeros((n, nwave))
    m2 = np.zeros((n, nwave))
    tmp = np.empty((n, nwave))
    for k in range(ndiag):
        d = half - k
        if d >= nwave or -d >= nwave:
            continue
        if d >= 0:
            dst, src = slice(0, nwave - d), resolution[:, k, d:]
        else:
            dst, src = slice(-d, nwave), resolution[:, k, :nwave + d]
        w = tmp[:, dst]
        w[...] = src
        wsum[:, dst] += w
        if d:  # the d = 0 diagonal adds nothing to the moments
            w *= d
            m1[:, dst] += w
            w *= d
            m2[:, dst] += w
    good = wsum > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(m1, wsum, out=m1)  # mean
        np.divide(m2, wsum, out=m2)
    np.square(m1, out=m1)
    m2 -= m1  # variance
    np.clip(m2, 0, None, out=m2)
    np.sqrt(m2, out=m2)
    m2[~good] = 0.0
    if scale is not None:
        m2 *= scale
    return m2


def _complete_rows(lsf: np.ndarray, half: int) -> np.ndarray:
    """Which rows of an arm's resolution matrix are whole: the first and last `half` (ndiag//2)
    rows are cut off at the arm's edge (their kernels lack the pixels beyond it), so their widths
    come out up to ~30% too small. Those rows of `lsf` [n, nwave] (Å) take the width of the arm's
    nearest whole row, in place; where arms overlap, the merge averages whole rows only."""
    complete = np.ones(lsf.shape[1], bool)
    if half and lsf.shape[1] > 2 * half:
        complete[:half] = complete[-half:] = False
        lsf[:, :half] = lsf[:, half:half + 1]
        lsf[:, -half:] = lsf[:, -half - 1:-half]
    return complete


@register_builder("desi")
class Desi(Builder):
    version = "2"  # 2: lsf_sigma leaves out the resolution rows cut off at the arm edges
    Config = DesiConfig

    def modalities(self):
        return {"spectrum": SpectrumSpec(NPIX)}

    def extra_columns(self):
        return ([pa.field("targetid", pa.int64()), pa.field("desi_survey", pa.string()),
                 pa.field("program", pa.string()), pa.field("healpix", pa.int32()),
                 pa.field("primary", pa.bool_()), pa.field("zcat_nspec", pa.int16()),
                 pa.field("tsnr2_lrg", pa.float32())]
                + [pa.field(name, t) for _, name, t in REDSHIFT_COLUMNS + OPTIONAL_REDSHIFT + FIBERMAP_COLUMNS])

    def list_inputs(self, raw):
        groups: dict[int, list[str]] = defaultdict(list)
        for p in sorted(Path(raw).rglob("*.fits*")):
            m = FILE_RE.match(p.name)
            if not m or not self._in_specprod(p):
                continue
            groups[int(m.group(4))].append(str(p))
        return [RawInput(f"healpix-{hpix}", tuple(sorted(paths)))
                for hpix, paths in sorted(groups.items())
                if any(FILE_RE.match(Path(x).name).group(1) == "coadd" for x in paths)]

    def _in_specprod(self, p: Path) -> bool:
        parts = p.parts
        if "redux" in parts:  # archive layout spectro/redux/SPECPROD/...; else a flat mirror
            i = parts.index("redux")
            return i + 1 < len(parts) and parts[i + 1] == self.config.specprod
        return True

    # ---------------------------------------------------------------------------------------

    def read(self, item):
        with contextlib.ExitStack() as open_files:  # each coadd is opened (headers parsed) once
            yield from self._read(item, open_files)

    def _read(self, item, open_files):
        coadds, redrocks = {}, {}
        for path in item.paths:
            kind, survey, program, _ = FILE_RE.match(Path(path).name).groups()[:4]
            (coadds if kind == "coadd" else redrocks)[(survey, program)] = path
        files, problems = [], []
        for key in sorted(coadds):
            try:
                if key not in redrocks:
                    raise InputRejected(f"{Path(coadds[key]).name}: its redrock file "
                                        f"redrock-{key[0]}-{key[1]}-*.fits is missing; download it "
                                        "next to the coadd")
                files.append(self._scan(key, coadds[key], redrocks[key], open_files))
            except InputRejected as e:
                reraise_environment(e)
                problems.append(str(e))
        if not files:
            raise InputRejected("; ".join(problems))
        for reason in problems:  # other coadds of this pixel are still ingested
            yield Rejection(item.key, reason)
        primary, nspec = _primary(files)
        for f in files:
            for r in f["unmatched"]:
                yield Rejection(item.key, f"{Path(f['coadd']).name}: TARGETID {f['targetid'][r]} has "
                                f"no row in {Path(f['redrock']).name} REDSHIFTS", r,
                                f"{f['survey']}-{f['program']}-{f['targetid'][r]}", "targetid")
            for r, reason, column, name in f["bad"]:
                yield Rejection(item.key, reason, r, f"{f['survey']}-{f['program']}-{f['targetid'][r]}",
                                column, name)
            yield from self._rows(f, primary, nspec)

    def _scan(self, key, coadd, redrock, open_files) -> dict:
        """Check one coadd/redrock pair and read its small tables (not the spectra)."""
        with open_fits(redrock) as rr:
            z = require_hdu(rr, "REDSHIFTS", redrock).data
            require_columns(z, REQUIRED_REDSHIFTS, redrock, "REDSHIFTS")
            zcols = {c: native(z[c]) for c, _, _ in REDSHIFT_COLUMNS + OPTIONAL_REDSHIFT if has_column(z, c)}
            bad_z: dict[int, tuple[str, str]] = {}  # REDSHIFTS row -> (its first column whose text is not ASCII, why)
            for c in list(zcols):
                if zcols[c].dtype.kind in "SU":
                    raw = zcols[c]
                    zcols[c], rows = decode_text(raw)
                    for r in rows.tolist():
                        bad_z.setdefault(r, (c, describe_text(raw[r])))
            ztid = native(z["TARGETID"]).astype(np.int64)
            tsnr = None
            if "TSNR2" in [h.name for h in rr] and has_column(rr["TSNR2"].data, "TSNR2_LRG"):
                t = rr["TSNR2"].data
                tsnr = dict(zip(native(t["TARGETID"]).tolist(), native(t["TSNR2_LRG"]).tolist()))
        # headers and FIBERMAP now; the arm data are read chunk by chunk later from this handle
        hd = open_files.enter_context(open_fits(coadd))
        hdus = {h.name: h for h in hd}  # by name once (HDUList lookups by name scan every header)
        fm = require_hdu(hd, "FIBERMAP", coadd).data
        require_columns(fm, ["TARGETID", "TARGET_RA", "TARGET_DEC"], coadd, "FIBERMAP")
        n = len(fm)
        for arm in ARMS:
            for part in ("WAVELENGTH", "FLUX", "IVAR", "MASK", "RESOLUTION"):
                require_hdu(hd, f"{arm}_{part}", coadd, "DESI coadds carry B, R and Z arms")
            self._check_arm(hdus, arm, n, coadd)
        arms = {}
        for arm in ARMS:
            wave = native(hdus[f"{arm}_WAVELENGTH"].data).astype(np.float64)
            idx = np.rint((wave - WAVE_MIN) / WAVE_STEP).astype(np.int64)
            ok = (idx >= 0) & (idx < NPIX)
            if not ok.all() or np.abs(GRID[idx] - wave).max() > 1e-3:
                raise InputRejected(f"{Path(coadd).name}: {arm}_WAVELENGTH does not lie on the "
                                    f"{WAVE_MIN:g} + {WAVE_STEP} Å x {NPIX} grid; resample it first")
            # the grid columns of this arm: a slice when contiguous (always, for DESI coadds)
            cols = slice(int(idx[0]), int(idx[-1]) + 1) if np.array_equal(idx, np.arange(idx[0], idx[-1] + 1)) \
                else idx
            arms[arm] = {"idx": idx, "cols": cols, "dwave": np.gradient(wave),
                         "half": hdus[f"{arm}_RESOLUTION"].shape[1] // 2,
                         **{part: hdus[f"{arm}_{part}"] for part in ("FLUX", "IVAR", "MASK", "RESOLUTION")}}
        if tsnr is None and "SCORES" in hdus and has_column(hdus["SCORES"].data, "TSNR2_LRG"):
            s = hdus["SCORES"].data
            tsnr = dict(zip(native(s["TARGETID"]).tolist(), native(s["TSNR2_LRG"]).tolist()))
        targetid = native(fm["TARGETID"]).astype(np.int64)
        bad_fm: dict[int, str] = {}  # FIBERMAP row -> its first column whose text is not ASCII
        extras = {name: column_or_null(fm, col, t, n, bad_fm) for col, name, t in FIBERMAP_COLUMNS}
        ra, dec = native(fm["TARGET_RA"]).astype(float), native(fm["TARGET_DEC"]).astype(float)
        hpix = int(hd[0].header.get("HPXPIXEL", FILE_RE.match(Path(coadd).name).group(4)))
        zrow = {}
        for i, t in enumerate(ztid.tolist()):
            zrow.setdefault(t, i)  # a repeated REDSHIFTS row: the first one is used
        match = np.array([zrow.get(t, -1) for t in targetid.tolist()], np.int64)
        unmatched = np.flatnonzero(match < 0)
        # a row whose text cannot be read is rejected alone, naming its file, HDU, row and column
        bad = []
        hub = {c: name for c, name, _ in REDSHIFT_COLUMNS + OPTIONAL_REDSHIFT + FIBERMAP_COLUMNS}
        suspects = set(bad_fm)
        if bad_z:
            suspects |= set(np.flatnonzero(np.isin(match, list(bad_z))).tolist())
        for r in sorted(suspects):
            if match[r] < 0:  # already rejected: no REDSHIFTS row
                continue
            if r in bad_fm:
                c = bad_fm[r]
                why = f"{Path(coadd).name} FIBERMAP row {r} column {c}: {describe_text(np.asarray(fm[c])[r])}"
                bad.append((r, why, hub[c], Path(coadd).name))
            else:
                c, text = bad_z[int(match[r])]
                bad.append((r, f"{Path(redrock).name} REDSHIFTS row {int(match[r])} (TARGETID {targetid[r]}) "
                            f"column {c}: {text}", hub[c], Path(redrock).name))
        for r, *_ in bad:
            match[r] = -1
        return {"survey": key[0], "program": key[1], "coadd": coadd, "redrock": redrock, "hd": hd, "arms": arms,
                "targetid": targetid, "ra": ra, "dec": dec, "healpix": hpix, "zmatch": match,
                "zcols": zcols, "extras": extras, "unmatched": unmatched, "bad": bad,
                "tsnr2_lrg": np.array([np.nan if tsnr is None else tsnr.get(t, np.nan)
                                       for t in targetid.tolist()], np.float64)}

    @staticmethod
    def _check_arm(hd, arm, n, path):  # hd: the coadd's HDUs by name
        wave_hdu = hd[f"{arm}_WAVELENGTH"]
        unit = str(wave_hdu.header.get("BUNIT", "Angstrom")).strip().lower()
        if unit not in ("angstrom", "angstroms", "aa", "a"):
            raise InputRejected(f"{Path(path).name}: {arm}_WAVELENGTH has BUNIT {unit!r}, expected "
                                "Angstrom (vacuum); convert the file or report it")
        nwave = wave_hdu.header.get("NAXIS1", 0)
        for part, shape in (("FLUX", (n, nwave)), ("IVAR", (n, nwave)), ("MASK", (n, nwave))):
            got = hd[f"{arm}_{part}"].shape
            if tuple(got) != shape:
                raise InputRejected(f"{Path(path).name}: {arm}_{part} has shape {tuple(got)}, expected "
                                    f"{shape} (FIBERMAP rows x {arm}_WAVELENGTH pixels)")
        res = hd[f"{arm}_RESOLUTION"].shape
        if len(res) != 3 or res[0] != n or res[2] != nwave or res[1] % 2 == 0:
            raise InputRejected(f"{Path(path).name}: {arm}_RESOLUTION has shape {tuple(res)}, expected "
                                f"({n}, ndiag (odd), {nwave})")

    def _rows(self, f, primary, nspec):
        # image sections read just the rows of a chunk (and apply MASK's uint32 BZERO)
        hd = f["hd"]
        arms = f["arms"]
        cover = np.zeros(NPIX, np.int64)
        for a in arms.values():
            cover[a["idx"]] += 1
        overlap = np.flatnonzero(cover > 1)
        for a in arms.values():  # which of the arm's pixels fall in an overlap, and where
            pos = np.searchsorted(overlap, a["idx"])
            inside = (pos < len(overlap)) & (overlap[np.minimum(pos, len(overlap) - 1)] == a["idx"])
            a["overlap"] = (pos[inside], np.flatnonzero(inside)) if inside.any() else None
        n = len(f["targetid"])
        step = self.config.chunk_rows
        for s in range(0, n, step):
            rows = np.arange(s, min(n, s + step))
            rows = rows[f["zmatch"][rows] >= 0]
            if len(rows):
                yield self._chunk(hd, f, arms, cover, overlap, rows, primary, nspec)

    def _chunk(self, hd, f, arms, cover, overlap, rows, primary, nspec):
        m = len(rows)
        sl = slice(int(rows[0]), int(rows[-1]) + 1)
        sel = None if m == sl.stop - sl.start else rows - rows[0]  # None: every row of the slice

        def section(hdu):  # the chunk's rows of an image HDU, in native byte order
            a = hdu.section[sl]
            return native(a if sel is None else a[sel])

        flux = np.zeros((m, NPIX), np.float32)
        ivar = np.zeros((m, NPIX), np.float32)
        lsf = np.zeros((m, NPIX), np.float32)
        acc = {k: np.zeros((m, len(overlap))) for k in ("w", "wf", "wl", "f", "l", "wc", "lc", "nc")}
        for a in arms.values():
            a_flux = section(a["FLUX"])
            a_ivar = np.where(section(a["MASK"]) == 0, section(a["IVAR"]), np.float32(0))
            res = a["RESOLUTION"].section[sl]  # float32 as stored; lsf_sigma_pixels reads it as float64
            a_lsf = lsf_sigma_pixels(res if sel is None else res[sel], a["dwave"]).astype(np.float32)
            complete = _complete_rows(a_lsf, a["half"])
            c = a["cols"]
            flux[:, c], ivar[:, c], lsf[:, c] = a_flux, a_ivar, a_lsf  # exact copy off overlaps
            if a["overlap"] is not None:
                cols, src = a["overlap"]
                w = a_ivar[:, src].astype(np.float64)
                acc["w"][:, cols] += w
                acc["wf"][:, cols] += np.where(w > 0, w * a_flux[:, src], 0.0)  # 0 * NaN is NaN
                acc["f"][:, cols] += a_flux[:, src]
                acc["l"][:, cols] += a_lsf[:, src]
                # the LSF as coadd_cameras merges the resolution matrices (an ivar-weighted mean of
                # the rows: of their variances), over the rows whose kernel lies inside their arm
                wc = np.where(complete[src], w, 0.0)
                var = a_lsf[:, src].astype(np.float64) ** 2
                acc["wl"][:, cols] += np.where(wc > 0, wc * var, 0.0)
                acc["wc"][:, cols] += wc
                acc["lc"][:, cols] += np.where(complete[src], var, 0.0)
                acc["nc"][:, cols] += complete[src]
        if len(overlap):  # inverse-variance weighted mean; unweighted where no arm is good
            w = acc["w"]
            k = cover[overlap][None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                flux[:, overlap] = np.where(w > 0, acc["wf"] / w, acc["f"] / k)
                whole = np.where(acc["nc"] > 0, np.sqrt(acc["lc"] / acc["nc"]), acc["l"] / k)
                lsf[:, overlap] = np.where(acc["wc"] > 0, np.sqrt(acc["wl"] / acc["wc"]), whole)
            ivar[:, overlap] = w
        mask = ivar <= 0  # a NaN ivar stays unmasked, so the engine rejects the row with its reason
        spectrum = spectrum_array(SpectrumSpec(NPIX), _lambda_rows(m), flux, ivar, mask, lsf)
        tid = f["targetid"][rows]
        zr = f["zmatch"][rows]
        oid = [f"{f['survey']}-{f['program']}-{t}" for t in tid.tolist()]
        cols = common_columns(oid, f["ra"][rows], f["dec"][rows], "desi", "dr1")
        cols["spectrum"] = spectrum
        cols.update({
            "targetid": pa.array(tid), "desi_survey": pa.array([f["survey"]] * m),
            "program": pa.array([f["program"]] * m),
            "healpix": pa.array(np.full(m, f["healpix"], np.int32)),
            "primary": pa.array([primary.get(o, False) for o in oid]),
            "zcat_nspec": pa.array(np.array([nspec[t] for t in tid.tolist()], np.int16)),
            "tsnr2_lrg": pa.array(f["tsnr2_lrg"][rows].astype(np.float32), from_pandas=True)})
        for col, name, t in REDSHIFT_COLUMNS + OPTIONAL_REDSHIFT:
            v = f["zcols"].get(col)
            if v is None:
                cols[name] = pa.nulls(m, t)
            elif v.dtype.kind in "SU":
                cols[name] = pa.array(v[zr].tolist(), t)  # decoded and stripped in _scan
            else:
                cols[name] = pa.array(v[zr]).cast(t)
        for _, name, _ in FIBERMAP_COLUMNS:
            cols[name] = f["extras"][name].take(pa.array(rows))
        return pa.table(cols)

    # ---------------------------------------------------------------------------------------

    def fetch(self, raw, limit=None):
        """Download coadd + redrock pairs from the DR1 archive (healpix layout), `limit` pixels."""
        base = ARCHIVE.format(specprod=self.config.specprod)
        got = []
        for survey in ("main", "sv3", "sv1"):
            for program in ("dark", "bright"):
                sp = f"{base}{survey}/{program}/"
                for group in list_links(sp, r"[0-9]+/"):
                    for pix in list_links(sp + group, r"[0-9]+/"):
                        for kind in ("coadd", "redrock"):
                            name = f"{kind}-{survey}-{program}-{pix.rstrip('/')}.fits"
                            rel = (f"desi/dr1/spectro/redux/{self.config.specprod}/healpix/"
                                   f"{survey}/{program}/{group}{pix}{name}")
                            got.append(download(sp + group + pix + name, Path(raw) / rel))
                        if limit and len(got) >= 2 * limit:
                            return got
        return got


def _primary(files: list[dict]) -> tuple[dict[str, bool], dict[int, int]]:
    """ZCAT_PRIMARY as desispec.zcatalog.find_primary_spectra chooses it: among a TARGETID's
    coadds, ZWARN == 0 first, then the highest TSNR2_LRG; ties go to the first (survey, program)."""
    best: dict[int, tuple] = {}
    nspec: dict[int, int] = defaultdict(int)
    seen = set()
    for f in files:
        zwarn = f["zcols"]["ZWARN"]
        for r, t in enumerate(f["targetid"].tolist()):
            oid = f"{f['survey']}-{f['program']}-{t}"
            if oid in seen or f["zmatch"][r] < 0:  # a true duplicate row, or no redshift
                continue
            seen.add(oid)
            nspec[t] += 1
            snr = f["tsnr2_lrg"][r]
            rank = (int(zwarn[f["zmatch"][r]]) != 0, -(snr if np.isfinite(snr) else -np.inf))
            if t not in best or rank < best[t][0]:
                best[t] = (rank, oid)
    primary = {oid: True for _, oid in best.values()}
    return primary, nspec
