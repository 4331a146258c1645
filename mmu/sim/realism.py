"""How hard is the mock photometric-redshift problem? kNN / ridge R^2 from the raw survey files.

Reads only what a user of the real archives would have: tractor catalogues (observed,
Milky-Way-corrected g, r, i, z fluxes with their noise) joined to DESI redrock redshifts via the
FIBERMAP's BRICKNAME / BRICK_OBJID, keeping redrock SPECTYPE GALAXY. The truth catalogue is used
only for the all-galaxy sample.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _native(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "S":
        return np.char.strip(a.astype(str))
    return a.astype(a.dtype.newbyteorder("="))


def read_tractor(raw: Path) -> pd.DataFrame:
    import fitsio

    parts = []
    for path in sorted((Path(raw) / "legacysurvey" / "dr10" / "south" / "tractor").rglob("tractor-*.fits")):
        t = fitsio.read(str(path), ext=1, columns=["brickname", "objid", "brick_primary", "type"]
                        + [f"flux_{b}" for b in "griz"] + [f"mw_transmission_{b}" for b in "griz"])
        df = pd.DataFrame({n: _native(t[n]) for n in t.dtype.names})
        parts.append(df[df["brick_primary"]])
    return pd.concat(parts, ignore_index=True)


def read_desi_redshifts(raw: Path) -> pd.DataFrame:
    import fitsio

    parts = []
    for path in sorted((Path(raw) / "desi").rglob("redrock-*.fits")):
        z = fitsio.read(str(path), ext="REDSHIFTS", columns=["TARGETID", "Z", "ZWARN", "SPECTYPE"])
        fm = fitsio.read(str(path), ext="FIBERMAP", columns=["TARGETID", "BRICKNAME", "BRICK_OBJID"])
        parts.append(pd.DataFrame({"TARGETID": _native(z["TARGETID"]), "Z": _native(z["Z"]),
                                   "ZWARN": _native(z["ZWARN"]), "SPECTYPE": _native(z["SPECTYPE"]),
                                   "brickname": _native(fm["BRICKNAME"]),
                                   "objid": _native(fm["BRICK_OBJID"]),
                                   "survey": path.parts[-5]}))
    df = pd.concat(parts, ignore_index=True)
    # galaxies only (redrock's SPECTYPE, as a user of the real files would select): stars and
    # quasars have no photometric redshift problem of this kind
    df = df[(df["ZWARN"] == 0) & (df["SPECTYPE"] == "GALAXY")]
    df = df.sort_values(["TARGETID", "survey"]).drop_duplicates("TARGETID")
    return df


def features(cat: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(X = [g-r, r-i, i-z, r], finite mask) from observed, extinction-corrected fluxes."""
    mags = {}
    for b in "griz":
        f = cat[f"flux_{b}"].to_numpy(float) / cat[f"mw_transmission_{b}"].to_numpy(float)
        mags[b] = 22.5 - 2.5 * np.log10(np.where(f > 0, f, np.nan))
    x = np.column_stack([mags["g"] - mags["r"], mags["r"] - mags["i"], mags["i"] - mags["z"], mags["r"]])
    return x, np.all(np.isfinite(x), axis=1)


def r2_scores(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """5-fold cross-validated R^2 of a 16-neighbour kNN and of a ridge regression."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = KFold(5, shuffle=True, random_state=seed)
    knn = make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=min(16, max(1, len(y) * 4 // 5 - 1))))
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    return {"n": int(len(y)),
            "knn16_r2": float(r2_score(y, cross_val_predict(knn, x, y, cv=folds))),
            "ridge_r2": float(r2_score(y, cross_val_predict(ridge, x, y, cv=folds)))}


def photoz_realism(raw: Path, seed: int = 0) -> dict:
    """R^2 on the DESI spectroscopic sample (the benchmark's), its BGS-bright part, and all r < 23."""
    raw = Path(raw)
    tractor = read_tractor(raw)
    out = {}
    spec = read_desi_redshifts(raw).merge(tractor, on=["brickname", "objid"], how="inner")
    x, ok = features(spec)
    out["desi"] = r2_scores(x[ok], spec["Z"].to_numpy()[ok], seed)
    bright = ok & (x[:, 3] < 19.5)
    if bright.sum() >= 40:
        out["desi_r_lt_19.5"] = r2_scores(x[bright], spec["Z"].to_numpy()[bright], seed)
    truth = pd.read_parquet(raw / "sim_truth" / "galaxies.parquet", columns=["ls_brickname", "ls_objid", "z"])
    allg = tractor.merge(truth.rename(columns={"ls_brickname": "brickname", "ls_objid": "objid"}),
                         on=["brickname", "objid"], how="inner")
    x, ok = features(allg)
    ok &= x[:, 3] < 23.0
    out["all_r_lt_23"] = r2_scores(x[ok], allg["z"].to_numpy()[ok], seed)
    return out
