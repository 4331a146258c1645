"""`simulate()`: draw the universe cell by cell, then observe it survey by survey, in parallel.

Stages (each a set of independent Dask tasks whose random streams are keyed by their unit, so the
output does not depend on the number of workers): galaxies per sky cell -> stars and quasars per
field (own streams: the galaxies stay as they are) -> Legacy Survey bricks ->
DESI healpix files -> SDSS plates -> light-curve chunks -> truth tables and the manifest.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from mmu.hub.layout import atomic_write
from mmu.sim import desi, imaging, lightcurves, sdss, universe
from mmu.sim import footprint as fp_mod
from mmu.sim import gaia as sim_gaia
from mmu.sim import hsc as sim_hsc
from mmu.sim import tess as sim_tess
from mmu.sim.config import DECAM_BANDS, SIMULATOR_VERSION, SimConfig, cosmology, rng_for
from mmu.sim.fitsio_util import write_gzip_text

STAR_ID_OFFSET = 1_000_000_000
#: mock TIC ids: star_id + TIC_ID_OFFSET (real TIC ids reach ~2.3e9)
TIC_ID_OFFSET = 3_000_000_000
QSO_ID_OFFSET = 2_000_000_000
PLASTICC_ID_OFFSET = 10_000


class _Executor:
    """Runs task lists in order-independent fashion: in-process (workers=1), on a given Dask
    client, or on a private LocalCluster of `workers` processes."""

    def __init__(self, workers, client, progress):
        self.workers, self.client, self.progress = workers, client, progress
        self._cluster = None

    def __enter__(self):
        if self.client is None and (self.workers or 1) > 1:
            from dask.distributed import Client, LocalCluster

            self._cluster = LocalCluster(n_workers=int(self.workers), threads_per_worker=1, processes=True,
                                         dashboard_address=None, silence_logs=40)
            self.client = Client(self._cluster)
        return self

    def __exit__(self, *exc):
        if self._cluster is not None:
            self.client.close()
            self._cluster.close()

    def map(self, fn, arglist, desc):
        from mmu.logs import tqdm

        if not arglist:
            return []
        if self.client is None:
            return [fn(*a) for a in tqdm(arglist, desc=desc, disable=not self.progress, leave=False)]
        from dask.distributed import as_completed

        futures = [self.client.submit(fn, *a, pure=False) for a in arglist]
        for _ in tqdm(as_completed(futures), total=len(futures), desc=desc, disable=not self.progress, leave=False):
            pass
        return self.client.gather(futures)


# --- tasks (module level so Dask can pickle them) -------------------------------------------

def _universe_task(seed, cell, cfg):
    out = universe.draw_cell(seed, cell["key"], cell["ra"], cell["dec"], cell["tile"], cfg)
    return pd.DataFrame(out)


def _brick_task(seed, brick, sources, out_root, cfg):
    rows, sizes = imaging.render_brick(seed, brick, sources, Path(out_root), cfg)
    imaging.write_tractor(seed, brick, rows, Path(out_root))
    return pd.DataFrame(rows)


def _desi_task(seed, key, obs, truth, out_root, cfg):
    return desi.write_healpix(seed, key, obs, truth, Path(out_root), cfg)


def _sdss_task(seed, plate, sel, truth, out_root, cfg):
    return sdss.write_plate(seed, plate, sel, truth, Path(out_root), cfg)


def _lightcurve_task(seed, rows, cfg):
    return lightcurves.simulate_chunk(seed, rows, cfg)


# --- planning --------------------------------------------------------------------------------

def plan_cells(seed: int, galaxies: int, fp, cfg: SimConfig) -> list[dict]:
    cells = []
    if fp.kind == "fields":
        centres = fp_mod.field_centres(seed, fp.n_fields, cfg.brick_deg)
        counts = rng_for(seed, "field-counts").multinomial(galaxies, np.full(fp.n_fields, 1.0 / fp.n_fields))
        for k, ((ra0, dec0), n) in enumerate(zip(centres, counts)):
            if n == 0:
                continue
            rng = rng_for(seed, "positions", k)
            side = max(math.sqrt(n / cfg.density_per_deg2), 0.01)
            dec = dec0 + (rng.random(n) - 0.5) * side
            ra = np.mod(ra0 + (rng.random(n) - 0.5) * side / np.cos(np.radians(dec0)), 360.0)
            cells.append({"key": k, "tile": k, "ra": ra, "dec": dec, "centre": (ra0, dec0), "side": side})
    else:
        ra0, ra1, dec0, dec1 = fp.box
        rng = rng_for(seed, "positions")
        ra = rng.uniform(ra0, ra1, galaxies)
        dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(dec0)), np.sin(np.radians(dec1)), galaxies)))
        pix = fp_mod.healpix_nest(ra, dec, 4)
        for p in np.unique(pix):
            sel = pix == p
            cells.append({"key": int(p), "tile": int(p), "ra": ra[sel], "dec": dec[sel]})
    return cells


def _tile_boxes(gal: pd.DataFrame):
    """(tile, (ra_lo, ra_hi, dec_lo, dec_hi), median E(B-V)) of each tile's galaxy footprint."""
    for tile, grp in gal.groupby("tile", sort=True):
        ra_lo, ra_hi = grp["ra"].min(), grp["ra"].max()
        dec_lo, dec_hi = grp["dec"].min(), grp["dec"].max()
        if ra_hi - ra_lo > 180:  # wraps through RA = 0: keep it simple, use the galaxies' spread
            ra_lo, ra_hi = 0.0, 0.0
        yield int(tile), (ra_lo, ra_hi, dec_lo, dec_hi), float(grp["ebv_mw"].median())


def _point_fibre_fractions() -> tuple[float, float]:
    """DESI and SDSS fibre fractions of a point source (the galaxies' aperture tables at zero size)."""
    from mmu.sim import morphology

    cat = {"bulge_frac": np.zeros(1), "disk_hlr_arcsec": np.full(1, 1e-3), "disk_q": np.ones(1),
           "bulge_hlr_arcsec": np.full(1, 1e-3), "bulge_q": np.ones(1)}
    desi_f, sdss_f = morphology.fiber_fractions(cat)
    return float(desi_f[0]), float(sdss_f[0])


def _point_task(seed, tile, box, ebv, cfg):
    """Stars and quasars of one tile (mmu/sim/stars.py, qso.py), with their photometry."""
    from mmu.sim import qso as qso_mod
    from mmu.sim import stars as stars_mod
    from mmu.sim.footprint import galactic_latitude

    b = float(galactic_latitude(0.5 * (box[0] + box[1]), 0.5 * (box[2] + box[3]))[0])
    st = stars_mod.photometry(stars_mod.draw_tile(seed, tile, box, b, ebv, cfg))
    q = qso_mod.photometry(qso_mod.draw_tile(seed, tile, box, ebv, cfg)) if cfg.qso_per_deg2 > 0 else pd.DataFrame()
    return st, q


def draw_point_sources(seed: int, gal: pd.DataFrame, cfg: SimConfig, ex=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Milky Way stars and quasars in each tile's bounding box (their own random streams, so the
    galaxies do not change): truth tables with `star_id` / `qso_id`, class, kind and fibre fractions."""
    args = [(seed, t, box, ebv, cfg) for t, box, ebv in _tile_boxes(gal)]
    parts = ex.map(_point_task, args, "stars and quasars") if ex is not None else [_point_task(*a) for a in args]
    f_desi, f_sdss = _point_fibre_fractions()
    out = []
    for k, (name, id_col, cls) in enumerate((("star", "star_id", "STAR"), ("qso", "qso_id", "QSO"))):
        frames = [p[k] for p in parts if len(p[k])]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            {c: pd.Series(dtype=float) for c in ("ra", "dec", "tile", "z", "r_mag", "ebv_mw")})
        df.insert(0, id_col, np.arange(len(df), dtype=np.int64))
        df.insert(1, "class", cls)
        df["kind"] = name
        df["fiber_frac_desi"], df["fiber_frac_sdss"] = f_desi, f_sdss
        out.append(df)
    return out[0], out[1]


def plan_bricks(sources: pd.DataFrame, cfg: SimConfig) -> list[dict]:
    from scipy.spatial import cKDTree

    row, col = fp_mod.brick_index(sources["ra"].to_numpy(), sources["dec"].to_numpy(), cfg.brick_deg)
    keys = pd.DataFrame({"row": row, "col": col}).drop_duplicates().sort_values(["row", "col"])
    ra, dec = np.radians(sources["ra"].to_numpy()), np.radians(sources["dec"].to_numpy())
    xyz = np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    tree = cKDTree(xyz)
    bricks = []
    for r, c in keys.itertuples(index=False):
        info = {k: v[0] for k, v in fp_mod.brick_info(r, c, cfg.brick_deg).items()}
        primary = (row == r) & (col == c)
        x0, y0, nx, ny = imaging.crop_for(info, sources["ra"].to_numpy()[primary],
                                          sources["dec"].to_numpy()[primary], cfg)
        info.update(x0=x0, y0=y0, nx=nx, ny=ny)
        cra, cdec = np.radians(info["ra"]), np.radians(info["dec"])
        centre = [np.cos(cdec) * np.cos(cra), np.cos(cdec) * np.sin(cra), np.sin(cdec)]
        radius = np.radians(cfg.brick_deg * 0.75 + 0.05)
        near = np.sort(np.asarray(tree.query_ball_point(centre, 2 * np.sin(radius / 2)), dtype=np.int64))
        bricks.append({"info": info, "sources": near})
    return bricks


def _pick_tiles(seed: int, tiles: np.ndarray, fraction: float, purpose: str) -> set:
    rng = rng_for(seed, purpose)
    tiles = np.sort(np.unique(tiles))
    chosen = {int(t) for t in tiles if rng.random() < fraction}
    if not chosen and tiles.size and fraction > 0:
        chosen = {int(tiles[rng.integers(0, tiles.size)])}
    return chosen


# --- the entry point ---------------------------------------------------------------------------

def simulate(out, galaxies: int, transients: int, seed: int, footprint: str | None = None,
             workers: int | None = None, client=None, progress: bool = True, config: dict | None = None) -> dict:
    """Write a mock universe observed by Legacy Survey, DESI, SDSS and PLAsTiCC under `out`.

    Returns the manifest (also written to `out/mmu-sim.json`). Same arguments -> same bytes.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = SimConfig.from_overrides(config)
    fp = fp_mod.parse_footprint(footprint, galaxies)
    if galaxies < 1:
        raise ValueError("--galaxies must be at least 1")
    if transients < 0:
        raise ValueError("--transients must be >= 0")
    with _Executor(workers, client, progress) as ex:
        cells = plan_cells(seed, galaxies, fp, cfg)
        parts = ex.map(_universe_task, [(seed, c, cfg) for c in cells], "galaxies")
        gal = pd.concat(parts, ignore_index=True)
        gal.insert(0, "galaxy_id", np.arange(len(gal), dtype=np.int64))
        stars, qsos = draw_point_sources(seed, gal, cfg, ex)

        # Legacy Survey
        sources = pd.concat([gal.assign(kind="galaxy", source_id=gal["galaxy_id"]),
                             stars.assign(source_id=stars["star_id"] + STAR_ID_OFFSET, hlr_arcsec=0.0),
                             qsos.assign(source_id=qsos["qso_id"] + QSO_ID_OFFSET, hlr_arcsec=0.0)],
                            ignore_index=True)
        sources = sources.drop(columns=["class"]) if "class" in sources else sources
        bricks = plan_bricks(sources, cfg)
        tractor_parts = ex.map(_brick_task, [(seed, b["info"], sources.iloc[b["sources"]].reset_index(drop=True),
                                              str(out), cfg) for b in bricks], "legacysurvey bricks")
        tractor = pd.concat(tractor_parts, ignore_index=True)
        gal = _attach_legacysurvey(gal, tractor)
        stars = _attach_legacysurvey(stars, tractor, "star_id", "star", STAR_ID_OFFSET)
        qsos = _attach_legacysurvey(qsos, tractor, "qso_id", "qso", QSO_ID_OFFSET)

        # DESI: galaxy targets (BGS/LRG/ELG) and point-source targets (MWS/QSO), each with its own
        # assignment stream; spectra of any kind come from the `objects` truth (by source_id)
        tile_of = pd.Series(sources["tile"].to_numpy(), index=sources["source_id"].to_numpy())
        tr_gal = tractor[tractor["_kind"] == "galaxy"].copy()
        tr_gal["galaxy_id"] = tr_gal["_source_id"]
        tr_gal["tile"] = gal.set_index("galaxy_id").loc[tr_gal["galaxy_id"], "tile"].to_numpy()
        targets = desi.select_targets(tr_gal, cfg)
        targets["source_id"], targets["kind"] = targets["galaxy_id"], "galaxy"
        tr_psf = tractor.copy()
        tr_psf["tile"] = tile_of.loc[tr_psf["_source_id"]].to_numpy()
        psf_targets = desi.select_psf_targets(tr_psf, cfg)
        psf_targets["source_id"], psf_targets["kind"] = psf_targets["_source_id"], psf_targets["_kind"]
        sv3_tiles = _pick_tiles(seed, gal["tile"].to_numpy(), cfg.sv3_field_fraction, "sv3-tiles")
        for t in (targets, psf_targets):
            t["TARGETID"] = desi.encode_targetid(t["objid"], t["brickid"], t["release"])
        obs = pd.concat([desi.assign_observations(seed, targets, cfg, sv3_tiles),
                         desi.assign_observations(seed, psf_targets, cfg, sv3_tiles, "desi-assignment-psf")],
                        ignore_index=True)
        obs = obs.sort_values(["survey", "program", "hpix", "TARGETID"], kind="stable").reset_index(drop=True)
        objects = _objects(gal, stars, qsos)
        groups = [(k, g.reset_index(drop=True)) for k, g in obs.groupby(["survey", "program", "hpix"], sort=True)]
        desi_parts = ex.map(_desi_task, [(seed, k, g, objects.loc[np.unique(g["source_id"])], str(out), cfg)
                                         for k, g in groups], "desi healpix")
        desi_z = pd.concat(desi_parts, ignore_index=True) if desi_parts else pd.DataFrame()
        all_targets = pd.concat([targets, psf_targets], ignore_index=True)
        gal = _attach_desi(gal, all_targets, desi_z)
        stars = _attach_desi(stars, all_targets, desi_z, "star_id", "star", STAR_ID_OFFSET)
        qsos = _attach_desi(qsos, all_targets, desi_z, "qso_id", "qso", QSO_ID_OFFSET)

        # SDSS
        sdss_tiles = _pick_tiles(seed, gal["tile"].to_numpy(), cfg.sdss_field_fraction, "sdss-tiles")
        boss_tiles = _pick_tiles(seed, gal["tile"].to_numpy(), cfg.boss_field_fraction, "boss-tiles")
        points = pd.concat([s_.assign(source_id=s_[c] + off) for s_, c, off in
                            ((stars, "star_id", STAR_ID_OFFSET), (qsos, "qso_id", QSO_ID_OFFSET)) if len(s_)],
                           ignore_index=True) if len(stars) + len(qsos) else None
        sel = sdss.select(seed, gal, cfg, sdss_tiles, boss_tiles, points)
        plates = [(int(p), g.reset_index(drop=True)) for p, g in sel.groupby("plate", sort=True)]
        sdss_parts = ex.map(_sdss_task, [(seed, p, g, objects.loc[g["source_id"]], str(out), cfg)
                                         for p, g in plates], "sdss plates")
        sdss_z = pd.concat(sdss_parts, ignore_index=True) if sdss_parts else pd.DataFrame()
        gal = _attach_sdss(gal, sdss_z)
        stars = _attach_sdss(stars, sdss_z, "star_id", "star", STAR_ID_OFFSET)
        qsos = _attach_sdss(qsos, sdss_z, "qso_id", "qso", QSO_ID_OFFSET)

        # Gaia DR3: every star (the writer keeps the archive's limits: XP to G < 17.65); TESS:
        # variability classes for every star, SPOC light curves of the bright ones
        gaia_files, tess_files, bright = [], [], stars.iloc[:0]
        if len(stars):
            stars["gaia_source_id"] = sim_gaia.source_ids(stars["ra"], stars["dec"], rng_for(seed, "gaia", "ids"))
            gaia_files = sim_gaia.write_gaia(stars.assign(source_id=stars["gaia_source_id"]), out,
                                             rng_for(seed, "gaia", "files"))
            stars = sim_tess.draw_variability(sim_tess.assign_classes(stars, rng_for(seed, "tess", "classes")),
                                              rng_for(seed, "tess", "variability"))
            stars["tic_id"] = ((stars["star_id"] + TIC_ID_OFFSET).where(stars["r_mag"] < cfg.tess_r_limit)
                               .astype("Int64"))
            bright = stars[stars["tic_id"].notna()]
            if len(bright):
                tess_files = sim_tess.write_tess(bright, out, rng_for(seed, "tess", "files"),
                                                 sectors=cfg.tess_sectors, seed=seed)
        # HSC PDR3 Wide: the galaxies of a fraction of the fields, one tract per field
        hsc_tiles = _pick_tiles(seed, gal["tile"].to_numpy(), cfg.hsc_field_fraction, "hsc-tiles")
        hsc_gal = gal[gal["tile"].isin(sorted(hsc_tiles))]
        hsc = (sim_hsc.write_hsc(hsc_gal, out, rng_for(seed, "hsc", "patches"), seed=seed, cfg=cfg, compress=True)
               if len(hsc_gal) else {})

        # PLAsTiCC
        trans = _plan_transients(seed, gal, transients, cfg)
        chunks = [trans.iloc[i:i + 100].reset_index(drop=True) for i in range(0, len(trans), 100)]
        lc_parts = ex.map(_lightcurve_task, [(seed, c, cfg) for c in chunks], "light curves")
    n_lc_files = _write_plasticc(out, trans, lc_parts, cfg)

    truth_files = _write_truth(out, gal, stars, qsos, trans, lc_parts)
    manifest = _manifest(out, seed, galaxies, transients, fp, cfg, gal, stars, qsos, bricks, tractor, obs, sel,
                         desi_z, trans, truth_files, n_lc_files,
                         {"gaia_files": len(gaia_files), "tess_files": sum(p.suffix == ".fits" for p in tess_files),
                          "hsc_patch_files": len(hsc.get("files", []))},
                         {"stars_by_var_class": {k: int(v) for k, v in
                                                 stars["var_class"].value_counts().sort_index().items()}
                          if "var_class" in stars else {},
                          "tess_stars": int(len(bright)), "hsc_fields": len(hsc_tiles)})
    return manifest


def _objects(gal, stars, qsos) -> pd.DataFrame:
    """Every spectroscopic source's truth, indexed by source_id (galaxy_id; star_id + STAR_ID_OFFSET;
    qso_id + QSO_ID_OFFSET), with `kind`: what the DESI and SDSS writers model spectra from."""
    parts = [gal.assign(kind="galaxy", source_id=gal["galaxy_id"])]
    for df, c, off in ((stars, "star_id", STAR_ID_OFFSET), (qsos, "qso_id", QSO_ID_OFFSET)):
        if len(df):
            parts.append(df.assign(source_id=df[c] + off))
    return pd.concat(parts, ignore_index=True).set_index("source_id", drop=False)


def _attach_legacysurvey(gal, tractor, id_col="galaxy_id", kind="galaxy", offset=0):
    prim = tractor[(tractor["_kind"] == kind) & tractor["brick_primary"]].copy()
    prim["_id"] = prim["_source_id"] - offset
    prim = prim.set_index("_id")
    cols = {"brickname": "ls_brickname", "brickid": "ls_brickid", "objid": "ls_objid", "type": "ls_type",
            "flux_g": "ls_flux_g", "flux_r": "ls_flux_r", "flux_i": "ls_flux_i", "flux_z": "ls_flux_z",
            "flux_ivar_g": "ls_flux_ivar_g", "flux_ivar_r": "ls_flux_ivar_r", "flux_ivar_i": "ls_flux_ivar_i",
            "flux_ivar_z": "ls_flux_ivar_z"}
    part = prim[list(cols)].rename(columns=cols)
    gal = gal.join(part, on=id_col)
    for c in ("ls_brickid", "ls_objid"):
        gal[c] = gal[c].astype("Int64")
    rows = tractor[tractor["_kind"] == kind]
    gal["ls_n_catalog_rows"] = gal[id_col].map(
        (rows.assign(_id=rows["_source_id"] - offset)).groupby("_id").size()).fillna(0).astype(np.int64)
    return gal


def _attach_desi(gal, targets, desi_z, id_col="galaxy_id", kind="galaxy", offset=0):
    """The DESI ids and best redshift of each object of `kind`; point sources also get their
    MWS_TARGET bits and redrock SPECTYPE (not galaxies: sim_truth_v1's schema stays as it is)."""
    t = targets[targets["kind"] == kind].copy()
    t["_id"] = t["source_id"] - offset
    t = t.set_index("_id")
    tcols = {"TARGETID": "desi_targetid", "DESI_TARGET": "desi_target", "BGS_TARGET": "bgs_target"}
    if kind != "galaxy":
        tcols["MWS_TARGET"] = "mws_target"
    gal = gal.join(t[list(tcols)].astype("Int64").rename(columns=tcols), on=id_col)
    # (nullable Int64 before the join: 64-bit ids must not pass through float)
    zcols = {"Z": "desi_z", "ZWARN": "desi_zwarn", "survey": "desi_survey", "program": "desi_program",
             "hpix": "desi_hpix"}
    if kind != "galaxy":
        zcols.update({"SPECTYPE": "desi_spectype", "SUBTYPE": "desi_subtype"})
    dz = desi_z[desi_z["kind"] == kind].copy() if len(desi_z) else desi_z
    if len(dz):
        dz["_id"] = dz["source_id"] - offset
        best = dz.sort_values(["_id", "ZWARN", "survey", "program"], kind="stable").groupby("_id").first()
        gal = gal.join(best[list(zcols)].rename(columns=zcols), on=id_col)
        gal["desi_n_spectra"] = gal[id_col].map(dz.groupby("_id").size()).fillna(0).astype(np.int64)
        gal["desi_zwarn"] = gal["desi_zwarn"].astype("Int64")
        gal["desi_hpix"] = gal["desi_hpix"].astype("Int64")
    else:
        for c in zcols.values():
            gal[c] = np.nan
        gal["desi_n_spectra"] = 0
    return gal


def _attach_sdss(gal, sdss_z, id_col="galaxy_id", kind="galaxy", offset=0):
    cols = ["sdss_plate", "sdss_mjd", "sdss_fiberid", "sdss_z", "sdss_zwarning"]
    if kind != "galaxy":
        cols += ["sdss_class", "sdss_subclass"]
    part = sdss_z[sdss_z["kind"] == kind] if len(sdss_z) else sdss_z
    if len(part):
        part = part.assign(_id=part["source_id"] - offset).set_index("_id")[cols]
        gal = gal.join(part, on=id_col)
        for c in ("sdss_plate", "sdss_mjd", "sdss_fiberid", "sdss_zwarning"):
            gal[c] = gal[c].astype("Int64")
        return gal
    for c in cols:
        gal[c] = np.nan
    return gal


def _plan_transients(seed, gal, n, cfg):
    from mmu.sim.footprint import galactic_lb

    hosts = lightcurves.choose_hosts(seed, gal, n, cfg)
    rng = rng_for(seed, "transient-positions")
    ddf_tiles = _pick_tiles(seed, gal["tile"].to_numpy(), cfg.ddf_field_fraction, "ddf-tiles")
    h = gal.iloc[np.clip(hosts["host_index"].to_numpy(), 0, None)].reset_index(drop=True)
    hosted = hosts["host_index"].to_numpy() >= 0
    # supernovae follow the host's disk light: exponential radius, inclined and rotated like the disk
    r_d = h["disk_hlr_arcsec"].to_numpy() / 1.678
    radius = rng.gamma(2.0, 1.0, n) * r_d
    phi = rng.uniform(0, 2 * np.pi, n)
    is_sn = hosts["class"].isin(["SNIa", "SNII", "SNIbc"]).to_numpy()
    u, v = radius * np.cos(phi), radius * np.sin(phi) * h["disk_q"].to_numpy()
    pa = np.radians(h["pa_deg"].to_numpy())
    d_north = np.where(is_sn, u * np.cos(pa) - v * np.sin(pa), 0.0)
    d_east = np.where(is_sn, u * np.sin(pa) + v * np.cos(pa), 0.0)
    ra = h["ra"].to_numpy() + d_east / 3600.0 / np.cos(np.radians(h["dec"].to_numpy()))
    dec = h["dec"].to_numpy() + d_north / 3600.0
    tile = h["tile"].to_numpy().copy()
    z = h["z"].to_numpy().copy()
    # Milky Way variables: anywhere in a random tile's galaxy footprint, no host
    for i in np.flatnonzero(~hosted):
        g = gal.iloc[int(rng.integers(0, len(gal)))]
        ra[i] = g["ra"] + rng.normal(0, 0.01)
        dec[i] = g["dec"] + rng.normal(0, 0.01)
        tile[i], z[i] = g["tile"], 0.0
    ra = np.mod(ra, 360.0)
    l, b = galactic_lb(ra, dec) if n else (np.zeros(0), np.zeros(0))  # noqa: E741 (galactic l, b)
    desi_ok = h["desi_zwarn"].to_numpy(dtype=float, na_value=1.0) == 0
    sdss_ok = h["sdss_zwarning"].to_numpy(dtype=float, na_value=1.0) == 0
    spec_z = np.where(desi_ok, h["desi_z"].to_numpy(dtype=float, na_value=np.nan),
                      np.where(sdss_ok, h["sdss_z"].to_numpy(dtype=float, na_value=np.nan), np.nan))
    photo_err = 0.03 * (1 + z) * 10 ** rng.normal(0, 0.1, n)
    outlier = rng.random(n) < 0.05
    photo_z = np.where(outlier, rng.uniform(0.02, 1.0, n), np.clip(z + rng.normal(0, 1, n) * photo_err, 0.001, None))
    cosmo = cosmology(cfg.cosmology)
    trans = pd.DataFrame({
        "transient_id": hosts["transient_id"], "object_id": PLASTICC_ID_OFFSET + hosts["transient_id"],
        "cls": hosts["class"], "target": hosts["class"].map(lightcurves.TARGET_CODES).astype(np.int64),
        "host_galaxy_id": np.where(hosted, h["galaxy_id"].to_numpy(), -1),
        "ra": ra, "dec": dec, "gal_l": l, "gal_b": b,
        "offset_arcsec": np.hypot(d_north, d_east), "z": z, "tile": tile,
        "ddf": np.isin(tile, list(ddf_tiles)), "peak_mjd": hosts["peak_mjd"],
        "mwebv": np.where(hosted, h["ebv_mw"].to_numpy(), 0.03),
        "hostgal_specz": np.where(hosted, spec_z, 0.0),
        "hostgal_photoz": np.where(hosted, photo_z, 0.0),
        "hostgal_photoz_err": np.where(hosted, photo_err, 0.0),
    })
    if n:
        trans["distmod"] = np.where(hosted, cosmo.distmod(np.clip(trans["hostgal_photoz"], 1e-3, None)).value, np.nan)
        trans["true_distmod"] = np.where(hosted, cosmo.distmod(np.clip(trans["z"], 1e-4, None)).value, np.nan)
    else:
        trans["distmod"] = trans["true_distmod"] = np.zeros(0)
    return trans


def _write_plasticc(out: Path, trans, lc_parts, cfg) -> int:
    base = out / "plasticc"
    header = "object_id,mjd,passband,flux,flux_err,detected_bool\n"
    write_gzip_text(base / "plasticc_train_lightcurves.csv.gz", header + "".join(p[0] for p in lc_parts))
    lc_truth = pd.concat([p[1] for p in lc_parts], ignore_index=True) if lc_parts else pd.DataFrame()
    meta = pd.DataFrame({
        "object_id": trans["object_id"], "ra": trans["ra"], "decl": trans["dec"],
        "gal_l": trans["gal_l"], "gal_b": trans["gal_b"], "ddf_bool": trans["ddf"].astype(int),
        "hostgal_specz": trans["hostgal_specz"], "hostgal_photoz": trans["hostgal_photoz"],
        "hostgal_photoz_err": trans["hostgal_photoz_err"], "distmod": trans["distmod"],
        "mwebv": trans["mwebv"], "target": trans["target"], "true_target": trans["target"],
        "true_submodel": 1, "true_z": trans["z"], "true_distmod": trans["true_distmod"],
        "true_lensdmu": 0.0, "true_vpec": 0.0, "true_rv": 3.1, "true_av": 0.0,
        "true_peakmjd": trans["peak_mjd"], "libid_cadence": trans["tile"],
    })
    if len(lc_truth):
        meta = meta.merge(lc_truth[["object_id"] + [f"tflux_{b}" for b in "ugrizy"]], on="object_id", how="left")
    write_gzip_text(base / "plasticc_train_metadata.csv.gz", meta.to_csv(index=False, float_format="%.7g"))
    return 2


def _write_parquet(path: Path, df: pd.DataFrame) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=3)
    atomic_write(path, buf.getvalue())


def _write_truth(out: Path, gal, stars, qsos, trans, lc_parts) -> list[str]:
    base = out / "sim_truth"
    gal = gal.drop(columns=["pop_code"]).copy()
    tables = {"galaxies": gal, "stars": stars.drop(columns=["kind"]).copy(), "qsos": qsos.drop(columns=["kind"]).copy()}
    for name, df in tables.items():
        for c in df.columns:
            if df[c].dtype == object:
                df[c] = df[c].astype("string")
        _write_parquet(base / f"{name}.parquet", df)
    lc_truth = pd.concat([p[1] for p in lc_parts], ignore_index=True) if lc_parts else pd.DataFrame({"object_id": []})
    t = trans.rename(columns={"cls": "class"}).merge(lc_truth, on="object_id", how="left") if len(trans) else \
        trans.rename(columns={"cls": "class"})
    _write_parquet(base / "transients.parquet", t)
    return ["sim_truth/galaxies.parquet", "sim_truth/stars.parquet", "sim_truth/qsos.parquet",
            "sim_truth/transients.parquet"]


def _content_hash(out: Path) -> tuple[str, int, int]:
    h = hashlib.sha256()
    n = size = 0
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "mmu-sim.json"):
        data = path.read_bytes()
        h.update(path.relative_to(out).as_posix().encode() + b"\0" + hashlib.sha256(data).digest())
        n += 1
        size += len(data)
    return h.hexdigest(), n, size


def _manifest(out, seed, galaxies, transients, fp, cfg, gal, stars, qsos, bricks, tractor, obs, sel, desi_z, trans,
              truth_files, n_lc_files, more_files: dict, more_counts: dict) -> dict:
    digest, n_files, n_bytes = _content_hash(out)
    tr_gal = tractor[tractor["_kind"] == "galaxy"]
    repeated = int(obs.groupby("TARGETID").size().gt(1).sum()) if len(obs) else 0
    manifest = {
        "mock": True,
        "seed": int(seed),
        "simulator_version": SIMULATOR_VERSION,
        "parameters": {"galaxies": int(galaxies), "transients": int(transients), "footprint": fp.spec,
                       "config": cfg.to_dict()},
        "files": {
            "legacysurvey_bricks": len(bricks),
            "legacysurvey_coadd_files": int(sum(1 + 2 * int(imaging.brick_conditions(
                seed, str(b["info"]["brickname"]), cfg)["observed"].sum()) for b in bricks)),
            "legacysurvey_tractor_files": len(bricks),
            "desi_coadd_files": int(obs.groupby(["survey", "program", "hpix"]).ngroups) if len(obs) else 0,
            "desi_redrock_files": int(obs.groupby(["survey", "program", "hpix"]).ngroups) if len(obs) else 0,
            "sdss_spec_files": int(len(sel)),
            "sdss_boss_spec_files": int((sel["instrument"] == "BOSS").sum()) if len(sel) else 0,
            "plasticc_files": n_lc_files,
            "truth_files": len(truth_files),
            **more_files,
            "total_files": n_files,
            "total_bytes": n_bytes,
        },
        "counts": {
            "galaxies": int(len(gal)), "stars": int(len(stars)), "qsos": int(len(qsos)),
            "fields_or_cells": int(gal["tile"].nunique()),
            "legacysurvey_catalog_rows_by_kind": {k: int(v) for k, v in
                                                  tractor["_kind"].value_counts().sort_index().items()},
            "desi_spectra_by_spectype": ({k: int(v) for k, v in desi_z["SPECTYPE"].value_counts().sort_index().items()}
                                         if len(desi_z) else {}),
            "sdss_spectra_by_kind": {k: int(v) for k, v in sel["kind"].value_counts().sort_index().items()}
            if len(sel) else {},
            "legacysurvey_catalog_rows": int(len(tractor)),
            "legacysurvey_bricks_without_i": int(sum(not imaging.brick_conditions(
                seed, str(b["info"]["brickname"]), cfg)["observed"][DECAM_BANDS.index("i")] for b in bricks)),
            "legacysurvey_galaxies_in_two_or_more_bricks": int(tr_gal.groupby("_source_id").size().gt(1).sum()),
            "desi_targets": int(obs["TARGETID"].nunique()) if len(obs) else 0,
            "desi_spectra": int(len(obs)), "desi_targetids_in_several_coadds": repeated,
            "sdss_spectra": int(len(sel)),
            "sdss_and_desi_galaxies": int((gal["sdss_plate"].notna() & gal["desi_z"].notna()).sum()),
            "transients": int(len(trans)),
            "transients_by_class": {k: int(v) for k, v in trans["cls"].value_counts().sort_index().items()},
            **more_counts,
        },
        "content_sha256": digest,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    atomic_write(out / "mmu-sim.json", text.encode())
    return json.loads(text)
