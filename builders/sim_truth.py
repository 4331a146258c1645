"""The mock observatory's truth tables (`RAW/sim_truth/<table>.parquet`) as catalog datasets:
the labels of the mock benchmark. No modality column; every truth column rides along.

The columns are declared here (the engine needs a fixed schema) as docs/sim.md describes them.
A column the file lacks becomes null; a column the file has but this list lacks is left out and
recorded as a rejection of the input's extra column, so a newer simulator never loses data
silently. Object ids: galaxies `galaxy_id`, transients the PLAsTiCC `object_id` (so they join
plasticc_2018 row for row), stars `star_id`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmu.engine.builder import Builder, BuilderConfig, InputRejected, RawInput, Rejection, register_builder

F, I, S, B = pa.float64(), pa.int64(), pa.string(), pa.bool_()  # noqa: E741


def _cols(spec: str, t: pa.DataType) -> dict:
    return {name: t for name in spec.split()}


GALAXIES = {
    **_cols("galaxy_id tile group_id ls_n_catalog_rows desi_n_spectra", I),
    **_cols("population morphology ls_brickname ls_type desi_survey desi_program", S),
    **_cols("z logmass ssfr metallicity young_mass_fraction_1gyr av line_scale sed_tilt1 sed_tilt2 ebv_mw "
            "mass_formed coeff0 coeff1 coeff2 coeff3 coeff4 bulge_frac disk_hlr_arcsec bulge_hlr_arcsec "
            "disk_q bulge_q pa_deg hlr_arcsec axis_ratio sersic_n e1 e2 fiber_frac_desi fiber_frac_sdss "
            "desi_z sdss_z", F),
    **_cols(" ".join(f"mw_transmission_decam_{b} flux_decam_{b} ls_flux_{b} ls_flux_ivar_{b}" for b in "griz"), F),
    **_cols(" ".join(f"mw_transmission_sdss_{b} flux_sdss_{b}" for b in "ugriz"), F),
    **_cols(" ".join(f"flux_lsst_{b}" for b in "ugrizy"), F),
    # ids and flags stored as float (NaN = none) by the simulator become nullable integers
    **_cols("ls_brickid ls_objid desi_targetid desi_target bgs_target desi_zwarn desi_hpix sdss_plate sdss_mjd "
            "sdss_fiberid sdss_zwarning", I),
}
TRANSIENTS = {
    **_cols("transient_id object_id target host_galaxy_id tile n_obs n_detected", I),
    "class": S, "ddf": B,
    **_cols("gal_l gal_b offset_arcsec z peak_mjd mwebv hostgal_specz hostgal_photoz hostgal_photoz_err distmod "
            "true_distmod peak_flux_model_r param_peak_luminosity param_stretch param_plateau_days "
            "param_agn_luminosity param_drw_tau_days param_period_days param_distance_kpc", F),
    **_cols(" ".join(f"tflux_{b}" for b in "ugrizy"), F),
}
# mmu-sim 1.2: stars carry their survey links, labels and physical parameters; quasars are a new table
_LINKS_I = ("ls_brickid ls_objid ls_n_catalog_rows desi_targetid desi_target bgs_target mws_target desi_zwarn "
            "desi_hpix desi_n_spectra sdss_plate sdss_mjd sdss_fiberid sdss_zwarning")
_LINKS_S = "class ls_brickname ls_type desi_survey desi_program desi_spectype desi_subtype sdss_class sdss_subclass"
_PHOT_F = (" ".join(f"flux_decam_{b} mw_transmission_decam_{b} ls_flux_{b} ls_flux_ivar_{b}" for b in "griz") + " "
           + " ".join(f"flux_sdss_{b} mw_transmission_sdss_{b}" for b in "ugriz") + " "
           + " ".join(f"flux_lsst_{b}" for b in "ugrizy") + " fiber_frac_desi fiber_frac_sdss desi_z sdss_z sed_scale")
STARS = {**_cols("star_id tile gaia_source_id tic_id " + _LINKS_I, I), **_cols("population var_class " + _LINKS_S, S),
         **_cols("r_mag teff logg mh mass_msun rv_kms ebv_mw z radius_rsun distance_pc parallax_mas "
                  "pmra_masyr pmdec_masyr v_ra_kms v_dec_kms period amplitude phase0 " + _PHOT_F, F)}
QSOS = {**_cols("qso_id tile forest_seed " + _LINKS_I, I), **_cols(_LINKS_S, S),
        **_cols("r_mag z alpha_blue alpha_red fwhm_scale ebv_mw " + " ".join(f"line_scale_{k}" for k in range(10))
                + " " + _PHOT_F, F)}
TABLES = {"galaxies": ("galaxy_id", GALAXIES), "transients": ("object_id", TRANSIENTS), "stars": ("star_id", STARS),
          "qsos": ("qso_id", QSOS)}


@dataclass(frozen=True)
class SimTruthConfig(BuilderConfig):
    table: str = "galaxies"
    chunk_rows: int = 50_000

    def __post_init__(self):
        if self.table not in TABLES:
            raise ValueError(f"sim_truth table {self.table!r} unknown; one of {sorted(TABLES)}")


@register_builder("sim_truth")
class SimTruth(Builder):
    version = "1"
    Config = SimTruthConfig

    def extra_columns(self):
        _, columns = TABLES[self.config.table]
        return [pa.field(n, t) for n, t in columns.items() if n not in ("ra", "dec", "object_id")] + \
            ([pa.field("plasticc_object_id", I)] if self.config.table == "transients" else [])

    def list_inputs(self, raw):
        name = f"{self.config.table}.parquet"
        return [RawInput(p.relative_to(raw).as_posix(), (str(p),))
                for p in sorted(Path(raw).rglob(name)) if p.parent.name == "sim_truth"]

    def read(self, item):
        path = Path(item.paths[0])
        id_col, columns = TABLES[self.config.table]
        try:
            pf = pq.ParquetFile(path)
        except (OSError, pa.ArrowInvalid) as e:
            raise InputRejected(f"{path.name}: not a readable Parquet file ({e}); rerun `mmu sim`") from None
        have = set(pf.schema_arrow.names)
        missing = [c for c in (id_col, "ra", "dec") if c not in have]
        if missing:
            raise InputRejected(f"{path.name}: column(s) {missing} missing; is this `mmu sim` output?")
        unknown = sorted(have - set(columns) - {"ra", "dec"})
        if unknown:
            yield Rejection(item.key, f"{path.name}: column(s) {unknown} are not declared in "
                            "builders/sim_truth.py and were left out; declare them", column=unknown[0])
        fields = {f.name: f for f in self.extra_columns()}
        for batch in pf.iter_batches(batch_size=self.config.chunk_rows):
            t = pa.Table.from_batches([batch])
            n = t.num_rows
            cols = {"object_id": pc.cast(t.column(id_col), pa.string()),
                    "ra": t.column("ra").cast(F), "dec": t.column("dec").cast(F),
                    "survey": pa.array(["sim_truth"] * n), "release": pa.array(["v1"] * n)}
            for name, f in fields.items():
                src = "object_id" if name == "plasticc_object_id" else name
                cols[name] = _as(t.column(src), f.type, path, src) if src in have else pa.nulls(n, f.type)
            yield pa.table(cols)


def _as(col: pa.ChunkedArray, t: pa.DataType, path: Path, name: str) -> pa.Array:
    """Cast to the declared type; float ids with NaN for "none" become nullable integers."""
    col = col.combine_chunks()
    if pa.types.is_integer(t) and pa.types.is_floating(col.type):
        v = col.to_numpy(zero_copy_only=False)
        ok = np.isfinite(v)
        if np.any(v[ok] != np.round(v[ok])):
            raise InputRejected(f"{path.name}: column {name!r} holds non-integer values, declared integer")
        return pa.array(np.where(ok, v, 0).astype(np.int64), t, mask=~ok)
    return col.cast(t)
