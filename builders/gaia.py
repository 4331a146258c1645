"""Gaia DR3 BP/RP (XP) mean spectra -> spectrum rows, one per source_id, with the astrometry and
G/BP/RP photometry of `gaia_source` and the GSP-Phot parameters of `astrophysical_parameters`.

Format: the archive's bulk files (https://cdn.gea.esa.int/Gaia/gdr3/), gzipped ECSV named
``<Table>_<lo>-<hi>.csv.gz``, one file per range of HEALPix level-8 pixels (``source_id >> 43``):

    Spectroscopy/xp_continuous_mean_spectrum/XpContinuousMeanSpectrum_NNNNNN-NNNNNN.csv.gz
    gaia_source/GaiaSource_NNNNNN-NNNNNN.csv.gz
    Astrophysical_parameters/astrophysical_parameters/AstrophysicalParameters_NNNNNN-NNNNNN.csv.gz

A YAML header of ``#`` lines, then CSV. Arrays are JSON strings (``"[1.0,2.0]"``); the archive's
plain-CSV output writes them as ``"(1.0,2.0)"``, and both are read. Nulls are ``null`` or empty.
One raw input is one XP file, read with the GaiaSource and AstrophysicalParameters files whose
HEALPix ranges overlap it (joined on source_id).

The spectrum is the continuous representation sampled as GaiaXPy's `calibrate` samples it (its
default grid, 336-1020 nm every 2 nm; the design matrices and BP/RP merge weights come from
GaiaXPy's own XpSampling/XpMerge tables), done for a whole chunk at once with numpy; the flux error
comes from the coefficient covariance diag(err) C diag(err), C the correlation matrix the
archive packs as a vector (used packed: see `sample_arm`). tests/test_builder_gaia.py checks
equality with `gaiaxpy.calibrate`.
A source with one arm only (BP or RP null) keeps its row: the other arm's pixels are masked,
exactly where GaiaXPy returns NaN. Both arms null, an array that does not parse or has the wrong
length, or no gaia_source row: the row is rejected, naming the file, column and source_id.
"""
from __future__ import annotations

import functools
import logging
import re
import warnings
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmu.engine.builder import Builder, BuilderConfig, InputRejected, RawInput, Rejection, register_builder
from mmu.model.schema import SpectrumSpec, spectrum_array

from ._common import common_columns, download, list_links

log = logging.getLogger(__name__)

ARCHIVE = "https://cdn.gea.esa.int/Gaia/gdr3/"
RAW_ROOT = "gaia/gdr3"  # RAW/gaia/gdr3/<the archive's path>
TABLE_DIRS = {"XpContinuousMeanSpectrum": "Spectroscopy/xp_continuous_mean_spectrum/",
              "GaiaSource": "gaia_source/",
              "AstrophysicalParameters": "Astrophysical_parameters/astrophysical_parameters/"}
FILE_RE = re.compile(r"^(XpContinuousMeanSpectrum|GaiaSource|AstrophysicalParameters)_([0-9]{6})-([0-9]{6})"
                     r"\.(csv|ecsv)(\.gz)?$")
HPX8_SHIFT = 43  # HEALPix level-8 nested index = source_id >> 43 (level 12 is source_id // 2**35)

NPIX = 343  # GaiaXPy's default absolute grid: 336 .. 1020 nm, 2 nm
TO_HUB_FLUX = 1e19  # W m^-2 nm^-1 -> 1e-17 erg s^-1 cm^-2 Angstrom^-1
BANDS = ("bp", "rp")
BP_HIGH_NM, RP_LOW_NM = 643.0, 635.0  # gaiaxpy.core.satellite: BP 330-643 nm, RP 635-1020 nm
N_COEFF = 55  # DR3 bases: 55 per arm (bp_basis_function_id 56, rp_basis_function_id 57)

# per arm: (column, Arrow type) kept as survey columns; arrays and the covariance inputs first
ARM_ARRAYS = ("coefficients", "coefficient_errors", "coefficient_correlations")
ARM_SCALARS = [("standard_deviation", pa.float64()), ("n_parameters", pa.int16()),
               ("basis_function_id", pa.int16()), ("degrees_of_freedom", pa.int32()),
               ("n_relevant_bases", pa.int16()), ("chi_squared", pa.float64())]
ARM_REQUIRED = ("coefficients", "coefficient_errors", "coefficient_correlations", "standard_deviation",
                "n_parameters")
SOURCE_COLUMNS = [("parallax", pa.float64()), ("parallax_error", pa.float32()), ("pmra", pa.float64()),
                  ("pmra_error", pa.float32()), ("pmdec", pa.float64()), ("pmdec_error", pa.float32()),
                  ("phot_g_mean_mag", pa.float32()), ("phot_bp_mean_mag", pa.float32()),
                  ("phot_rp_mean_mag", pa.float32())]
AP_COLUMNS = [("teff_gspphot", pa.float32()), ("logg_gspphot", pa.float32()), ("mh_gspphot", pa.float32())]

# the AL line-spread function, approximated as the diffraction-limited PSF of Gaia's 1.45 m (along
# scan) aperture on 58.9 mas pixels, FWHM = 1.03 lambda / D, in pseudo-wavelength samples (one AL
# pixel each), plus the sample's own width; converted to Angstrom with GaiaXPy's dispersion tables
APERTURE_AL_M, PIXEL_AL_MAS = 1.45, 58.9


@dataclass(frozen=True)
class GaiaConfig(BuilderConfig):
    chunk_rows: int = 1024  # sources per Arrow chunk (~20 MB of arrays)


@functools.lru_cache(maxsize=1)
def xp_model() -> dict:
    """GaiaXPy's default sampling: grid (nm), design matrices {bp, rp} [55, 343], merge weights
    {bp, rp} [343], and the approximate LSF sigma (Angstrom) of each arm on the grid."""
    from mmu.extras import import_keeping_matplotlib_rc

    import_keeping_matplotlib_rc("gaiaxpy")  # GaiaXPy sets matplotlib's text.usetex on import
    from gaiaxpy.config.paths import config_path
    from gaiaxpy.core.config import load_xpmerge_from_xml, load_xpsampling_from_xml

    grid, merge = load_xpmerge_from_xml()
    design = load_xpsampling_from_xml()
    grid = np.asarray(grid, np.float64)
    lsf = {}
    for band, model in (("bp", "bpC03_v375wi"), ("rp", "rpC03_v142r")):
        wl, pwl = np.genfromtxt(Path(config_path) / f"{model}_dispersion.csv", delimiter=",")
        nm_per_sample = np.abs(np.interp(grid, wl, np.gradient(wl, pwl)))
        fwhm_samples = 1.03 * grid * 1e-9 / APERTURE_AL_M * 206264.806e3 / PIXEL_AL_MAS
        sigma_samples = np.sqrt((fwhm_samples / 2.3548) ** 2 + 1 / 12)
        lsf[band] = 10.0 * np.sqrt((sigma_samples * nm_per_sample) ** 2 + 2.0 ** 2 / 12)  # + the 2 nm pixel
    return {"grid": grid, "design": {b: np.asarray(design[b], np.float64) for b in BANDS},
            "merge": {b: np.asarray(merge[b], np.float64) for b in BANDS}, "lsf": lsf}


def unpack_correlations(packed: np.ndarray, n: int) -> np.ndarray:
    """The n x n correlation matrix from the archive's vector of its n(n-1)/2 off-diagonal
    elements: the lower triangle row by row (= the upper triangle column by column), unit diagonal.
    `packed` may be [k] or [m, k] (m matrices)."""
    packed = np.asarray(packed, np.float64)
    out = np.zeros(packed.shape[:-1] + (n, n))
    i, j = np.tril_indices(n, k=-1)
    out[..., i, j] = packed
    out[..., j, i] = packed
    out[..., np.arange(n), np.arange(n)] = 1.0
    return out


def coefficient_covariance(errors: np.ndarray, packed_correlations: np.ndarray) -> np.ndarray:
    """The covariance of the coefficients, diag(err) C diag(err) ([m, n] errors -> [m, n, n])."""
    errors = np.asarray(errors, np.float64)
    corr = unpack_correlations(packed_correlations, errors.shape[-1])
    return errors[..., :, None] * corr * errors[..., None, :]


def sample_arm(coefficients: np.ndarray, errors: np.ndarray, packed: np.ndarray, design: np.ndarray):
    """Flux and flux error of one arm on the design matrix's grid, for m sources at once:
    flux = c D, error = sqrt(diag(D^T Cov D)), Cov = diag(err) C diag(err). (GaiaXPy divides the
    errors by the LSQ standard deviation and multiplies the sampled error back by it: the same.)

    The diagonal of D^T Cov D is sum_k D_kp^2 err_k^2 + 2 sum_{k>l} D_kp D_lp err_k err_l C_kl: two
    matrix products against the packed off-diagonal vector as the archive stores it (the lower
    triangle row by row), so no n x n matrix is formed per source.
    """
    n = errors.shape[1]
    i, j = np.tril_indices(n, k=-1)
    flux = coefficients @ design
    var = (errors ** 2) @ (design ** 2) + (errors[:, i] * errors[:, j] * packed) @ _pair_products(design, i, j)
    return flux, np.sqrt(np.clip(var, 0, None))


def _pair_products(design: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """2 D_ip D_jp for each packed pair (i, j): [n(n-1)/2, npix]."""
    return 2.0 * design[i] * design[j]


class MalformedArray(ValueError):
    """An array cell that does not parse; the message says what is wrong."""


def parse_array(text) -> np.ndarray | None:
    """One array cell: ``"[1,2]"`` (ECSV JSON), ``"(1,2)"`` (archive CSV) -> float64 array; a null
    cell (None, NaN, ``null``, empty) -> None. Raises MalformedArray naming the bad token."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    s = str(text).strip()
    if s in ("", "null", "NULL", "--"):
        return None
    if len(s) < 2 or (s[0], s[-1]) not in (("[", "]"), ("(", ")")):
        raise MalformedArray(f"not an array (expected '[a,b,...]' or '(a,b,...)'): {s[:40]!r}")
    body = s[1:-1].strip()
    if not body:
        return np.zeros(0)
    try:  # numpy >= 2 raises on a token it cannot read (older numpy warns and stops early)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            fast = np.fromstring(body, dtype=np.float64, sep=",")
        if fast.size == body.count(",") + 1:
            return fast
    except ValueError:
        pass
    tokens = body.split(",")
    try:
        values = np.array([float("nan") if t.strip() == "null" else float(t) for t in tokens], np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise MalformedArray(f"element {bad.strip()[:20]!r} is not a number") from None
    return values


def _is_float(t: str) -> bool:
    try:
        float(t)
        return True
    except ValueError:
        return t.strip() == "null"


def read_table(path: str | Path, columns: list[str], optional: list[str] = (), what: str = "",
               chunksize: int | None = None) -> object:
    """One bulk file (gzipped ECSV or CSV) as a pandas DataFrame of `columns` (+ the `optional`
    ones it has), or an iterator of DataFrames of `chunksize` rows; array columns stay text.
    Raises InputRejected naming the file (also while iterating)."""
    import pandas as pd

    name = Path(path).name
    try:
        head = pd.read_csv(path, comment="#", nrows=0)
    except (OSError, EOFError, ValueError, zlib.error, pd.errors.ParserError) as e:
        raise InputRejected(f"{name}: not a readable CSV/ECSV file ({type(e).__name__}: {e}); "
                            "re-download it from the archive") from None
    have = set(head.columns)
    missing = [c for c in columns if c not in have]
    if missing:
        raise InputRejected(f"{name}: missing column(s) {missing}" + (f"; {what}" if what else ""))
    use = list(columns) + [c for c in optional if c in have]
    text = [c for c in use if any(c.endswith(a) for a in ARM_ARRAYS)]
    kwargs = {"comment": "#", "usecols": use, "na_values": ["null"], "keep_default_na": True,
              "dtype": {**{c: str for c in text}, "source_id": "Int64"}, "low_memory": False}
    if chunksize is None:
        try:
            return pd.read_csv(path, **kwargs)
        except (OSError, EOFError, ValueError, zlib.error, pd.errors.ParserError) as e:
            raise InputRejected(f"{name}: cannot be parsed ({type(e).__name__}: {e}); re-download it from "
                                "the archive") from None
    return _chunks(path, kwargs, chunksize)


def _chunks(path, kwargs, chunksize):
    import pandas as pd

    try:
        with pd.read_csv(path, chunksize=chunksize, **kwargs) as reader:
            yield from reader
    except (OSError, EOFError, ValueError, zlib.error, pd.errors.ParserError) as e:
        raise InputRejected(f"{Path(path).name}: cannot be parsed ({type(e).__name__}: {e}); re-download it "
                            "from the archive") from None


@register_builder("gaia")
class Gaia(Builder):
    version = "1"
    Config = GaiaConfig

    def modalities(self):
        return {"spectrum": SpectrumSpec(NPIX)}

    def extra_columns(self):
        fields = [pa.field("source_id", pa.int64()), pa.field("solution_id", pa.int64()),
                  pa.field("has_bp", pa.bool_()), pa.field("has_rp", pa.bool_())]
        for band in BANDS:
            fields += [pa.field(f"{band}_{a}", pa.list_(pa.float64())) for a in ARM_ARRAYS]
            fields += [pa.field(f"{band}_{c}", t) for c, t in ARM_SCALARS]
        fields += [pa.field(c, t) for c, t in SOURCE_COLUMNS + AP_COLUMNS]
        return fields

    # ---------------------------------------------------------------------------------------

    def list_inputs(self, raw):
        files: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
        for p in sorted(Path(raw).rglob("*")):
            m = FILE_RE.match(p.name)
            if m and p.is_file():
                files[m.group(1)].append((int(m.group(2)), int(m.group(3)), str(p)))
        inputs = []
        for lo, hi, xp in sorted(files["XpContinuousMeanSpectrum"]):
            others = [path for table in ("GaiaSource", "AstrophysicalParameters")
                      for (a, b, path) in sorted(files[table]) if a <= hi and b >= lo]
            inputs.append(RawInput(f"XpContinuousMeanSpectrum_{lo:06d}-{hi:06d}", (xp, *others)))
        return inputs

    def read(self, item):
        kinds = defaultdict(list)
        for path in item.paths:
            kinds[FILE_RE.match(Path(path).name).group(1)].append(path)
        xp_path = kinds["XpContinuousMeanSpectrum"][0]
        xp_name = Path(xp_path).name
        lo, hi = (int(x) for x in FILE_RE.match(xp_name).group(2, 3))
        if not kinds["GaiaSource"]:
            raise InputRejected(f"{xp_name}: no GaiaSource_*.csv.gz file covers HEALPix-8 pixels {lo:06d}-{hi:06d} "
                                "(needed for ra, dec, astrometry and photometry); download it next to the "
                                "XP file (mmu fetch gaia_dr3)")
        arm_cols = [f"{b}_{c}" for b in BANDS for c in ARM_REQUIRED]
        # the XP file streams chunk by chunk (tens of kB of text per source); the lookups are small
        xp = read_table(xp_path, ["source_id"] + arm_cols,
                        ["solution_id"] + [f"{b}_{c}" for b in BANDS for c, _ in ARM_SCALARS],
                        "a Gaia DR3 XpContinuousMeanSpectrum file has them", chunksize=self.config.chunk_rows)
        src = self._lookup(kinds["GaiaSource"], ["source_id", "ra", "dec"] + [c for c, _ in SOURCE_COLUMNS], lo, hi)
        ap = self._lookup(kinds["AstrophysicalParameters"], ["source_id"] + [c for c, _ in AP_COLUMNS], lo, hi)
        offset = 0
        for df in xp:
            yield from self._chunk(df.reset_index(drop=True), offset, xp_name, item.key, src, ap)
            offset += len(df)

    @staticmethod
    def _lookup(paths, columns, lo, hi):
        """The rows of `paths` (one table, several HEALPix ranges) in HEALPix-8 pixels lo..hi, indexed by
        source_id; None when there are no such files."""
        import pandas as pd

        if not paths:
            return None
        parts = []
        for p in paths:
            t = read_table(p, columns, what="a Gaia DR3 bulk file of this table has them")
            hpx8 = t["source_id"].astype("Int64") // (1 << HPX8_SHIFT)
            parts.append(t[((hpx8 >= lo) & (hpx8 <= hi)).fillna(False).to_numpy(bool)])
        t = pd.concat(parts, ignore_index=True)
        t = t[~t["source_id"].duplicated(keep="first")]
        return t.set_index(t["source_id"].astype("int64"))

    def _chunk(self, df, offset, xp_name, key, src, ap):
        model = xp_model()
        m = len(df)
        sid = df["source_id"]
        rejected: dict[int, Rejection] = {}
        pd_na = _pd_na()

        def reject(i, reason, column=None):
            if i not in rejected:
                oid = None if sid.iloc[i] is pd_na else str(int(sid.iloc[i]))
                rejected[i] = Rejection(key, f"{xp_name}: {reason}", offset + i, oid, column, xp_name)

        for i in np.flatnonzero(sid.isna().to_numpy()):
            reject(int(i), "source_id is null", "source_id")
        arms = {}
        for band in BANDS:
            arrays = {a: [None] * m for a in ARM_ARRAYS}
            present = np.zeros(m, bool)
            npar = df[f"{band}_n_parameters"].to_numpy(dtype=float, na_value=np.nan)
            stdev = df[f"{band}_standard_deviation"].to_numpy(dtype=float, na_value=np.nan)
            for a in ARM_ARRAYS:
                col = f"{band}_{a}"
                for i, text in enumerate(df[col].tolist()):
                    try:
                        arrays[a][i] = parse_array(text)
                    except MalformedArray as e:
                        reject(i, f"source_id {_sid(sid, i)}: {col} is malformed ({e})", col)
            for i in range(m):
                if i in rejected:
                    continue
                got = {a: arrays[a][i] for a in ARM_ARRAYS}
                if got["coefficients"] is None:
                    nulls = [f"{band}_{a}" for a, v in got.items() if v is not None]
                    if nulls:
                        reject(i, f"source_id {_sid(sid, i)}: {band}_coefficients is null but {nulls} are "
                                  "not", nulls[0])
                    continue
                n = len(got["coefficients"])
                problem = self._arm_problem(band, got, npar[i], stdev[i], n)
                if problem:
                    reject(i, f"source_id {_sid(sid, i)}: {problem[1]}", problem[0])
                    continue
                present[i] = True
            arms[band] = (present, arrays)
        for i in range(m):
            if i not in rejected and not arms["bp"][0][i] and not arms["rp"][0][i]:
                reject(i, f"source_id {_sid(sid, i)}: no XP spectrum (bp_coefficients and rp_coefficients are "
                          "both null)", "bp_coefficients")
        # the gaia_source row: ra, dec and astrometry (a source without one cannot be placed)
        ids = np.array([-1 if v is pd_na else int(v) for v in sid.tolist()], np.int64)
        for i in range(m):
            if i not in rejected and ids[i] not in src.index:
                reject(i, f"source_id {ids[i]} has no row in the GaiaSource files of this HEALPix range",
                       "source_id")
        for i in sorted(rejected):
            yield rejected[i]
        keep = np.array([i for i in range(m) if i not in rejected], np.int64)
        if len(keep):
            yield self._rows(df, keep, ids, arms, src, ap, model)

    @staticmethod
    def _arm_problem(band, got, npar, stdev, n):
        if n != N_COEFF:
            return f"{band}_coefficients", (f"{band}_coefficients has {n} elements; the DR3 XP bases have "
                                            f"{N_COEFF} per arm")
        if not np.isfinite(npar) or int(npar) != n:
            return f"{band}_n_parameters", f"{band}_n_parameters is {npar}, but {band}_coefficients has {n}"
        for a, want in (("coefficient_errors", n), ("coefficient_correlations", n * (n - 1) // 2)):
            v = got[a]
            if v is None:
                return f"{band}_{a}", f"{band}_{a} is null while {band}_coefficients is not"
            if len(v) != want:
                return f"{band}_{a}", f"{band}_{a} has {len(v)} elements, expected {want}"
        for a in ARM_ARRAYS:
            if not np.isfinite(got[a]).all():
                return f"{band}_{a}", f"{band}_{a} has a non-finite element"
        if not np.all(got["coefficient_errors"] > 0):
            return f"{band}_coefficient_errors", f"{band}_coefficient_errors has an element <= 0"
        if np.abs(got["coefficient_correlations"]).max(initial=0) > 1:
            return f"{band}_coefficient_correlations", f"{band}_coefficient_correlations outside [-1, 1]"
        if not (np.isfinite(stdev) and stdev > 0):
            return f"{band}_standard_deviation", f"{band}_standard_deviation is {stdev}"
        return None

    def _rows(self, df, keep, ids, arms, src, ap, model):
        k = len(keep)
        grid = model["grid"]
        flux = np.full((k, NPIX), np.nan)
        err = np.full((k, NPIX), np.nan)
        lsf = np.zeros((k, NPIX))
        sampled = {}
        for band in BANDS:
            present, arrays = arms[band]
            rows = np.flatnonzero(present[keep])
            if len(rows):
                c = np.stack([arrays["coefficients"][keep[r]] for r in rows])
                e = np.stack([arrays["coefficient_errors"][keep[r]] for r in rows])
                p = np.stack([arrays["coefficient_correlations"][keep[r]] for r in rows])
                f, s = sample_arm(c, e, p, model["design"][band])
                sampled[band] = (rows, f, s)
        has = {b: arms[b][0][keep] for b in BANDS}
        both = has["bp"] & has["rp"]
        mb, mr = model["merge"]["bp"], model["merge"]["rp"]
        pos = {b: np.full(k, -1) for b in BANDS}
        for b, (rows, _, _) in sampled.items():
            pos[b][rows] = np.arange(len(rows))
        if both.any():
            rb, rr = pos["bp"][both], pos["rp"][both]
            fb, sb = sampled["bp"][1][rb], sampled["bp"][2][rb]
            fr, sr = sampled["rp"][1][rr], sampled["rp"][2][rr]
            flux[both] = fb * mb + fr * mr
            err[both] = np.sqrt(sb ** 2 * mb ** 2 + sr ** 2 * mr ** 2)
            lsf[both] = np.sqrt(mb * model["lsf"]["bp"] ** 2 + mr * model["lsf"]["rp"] ** 2)
        # one arm only: that arm alone, NaN beyond it (as GaiaXPy's calibrate)
        for b, outside in (("bp", grid >= BP_HIGH_NM), ("rp", grid <= RP_LOW_NM)):
            only = has[b] & ~both
            if only.any():
                r = pos[b][only]
                f, s = sampled[b][1][r].copy(), sampled[b][2][r].copy()
                f[:, outside] = np.nan
                s[:, outside] = np.nan
                flux[only], err[only] = f, s
                lsf[only] = model["lsf"][b]
        with np.errstate(divide="ignore", invalid="ignore"):
            good = np.isfinite(flux) & np.isfinite(err) & (err > 0)
            ivar = np.where(good, 1.0 / (err * TO_HUB_FLUX) ** 2, 0.0)
        hub_flux = np.where(good, flux * TO_HUB_FLUX, 0.0)
        spectrum = spectrum_array(SpectrumSpec(NPIX), np.broadcast_to((grid * 10).astype(np.float32), (k, NPIX)),
                                  hub_flux, ivar, ~good, lsf)
        sid = ids[keep]
        s = src.loc[sid]
        cols = common_columns([str(x) for x in sid.tolist()], s["ra"].to_numpy(float), s["dec"].to_numpy(float),
                              "gaia", "dr3")
        cols["spectrum"] = spectrum
        sub = df.iloc[keep]
        cols["source_id"] = pa.array(sid)
        cols["solution_id"] = _arrow(sub, "solution_id", pa.int64())
        cols["has_bp"] = pa.array(has["bp"])
        cols["has_rp"] = pa.array(has["rp"])
        for band in BANDS:
            present, arrays = arms[band]
            for a in ARM_ARRAYS:
                cols[f"{band}_{a}"] = pa.array([arrays[a][i].tolist() if present[i] else None for i in keep],
                                               pa.list_(pa.float64()))
            for c, t in ARM_SCALARS:
                cols[f"{band}_{c}"] = _arrow(sub, f"{band}_{c}", t, mask=~present[keep])
        for c, t in SOURCE_COLUMNS:
            cols[c] = _arrow(s, c, t)
        if ap is None:
            for c, t in AP_COLUMNS:
                cols[c] = pa.nulls(k, t)
        else:
            a = ap.reindex(sid)
            for c, t in AP_COLUMNS:
                cols[c] = _arrow(a, c, t)
        return pa.table(cols)

    # ---------------------------------------------------------------------------------------

    def fetch(self, raw, limit=None):
        """Download XP files (the first `limit`, by HEALPix range) and the GaiaSource and
        AstrophysicalParameters files whose ranges overlap them, into RAW/gaia/gdr3/<archive path>."""
        listing = {}
        for table, sub in TABLE_DIRS.items():
            names = list_links(ARCHIVE + sub, rf"{table}_[0-9]{{6}}-[0-9]{{6}}\.csv\.gz")
            listing[table] = [(int(n[len(table) + 1:len(table) + 7]), int(n[len(table) + 8:len(table) + 14]), n)
                              for n in names]
        got = []
        for lo, hi, name in sorted(listing["XpContinuousMeanSpectrum"])[:limit]:
            want = [("XpContinuousMeanSpectrum", name)] + [
                (t, n) for t in ("GaiaSource", "AstrophysicalParameters")
                for a, b, n in sorted(listing[t]) if a <= hi and b >= lo]
            for table, n in want:
                sub = TABLE_DIRS[table]
                got.append(download(ARCHIVE + sub + n, Path(raw) / RAW_ROOT / sub / n))
        return got


def _pd_na():
    import pandas as pd

    return pd.NA


def _sid(sid, i) -> str:
    v = sid.iloc[i]
    return "null" if v is _pd_na() else str(int(v))


def _arrow(df, column: str, t: pa.DataType, mask=None) -> pa.Array:
    """A DataFrame column as Arrow of type `t` (nulls kept); all nulls when the file lacks it."""
    n = len(df)
    if column not in df.columns:
        return pa.nulls(n, t)
    col = df[column]
    null = col.isna().to_numpy()
    if mask is not None:
        null = null | mask
    if pa.types.is_integer(t):  # through Int64: a float64 round trip would lose digits of solution_id
        values = col.astype("Int64").to_numpy(dtype=np.int64, na_value=0)
    else:
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    return pa.array(values, mask=null).cast(t)
