"""The data model: Arrow schema with units, HF features, round trips, and the validator."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmu.model.schema import (
    ImageSpec,
    LightcurveSpec,
    SpectrumSpec,
    dataset_schema,
    hf_features,
    image_array,
    lightcurve_array,
    modalities_of,
    spectrum_array,
)
from mmu.model.validate import SchemaMismatch, conform, validate_rows

IMG = ImageSpec(("legacysurvey-g", "legacysurvey-r"), 5, 4)
SPEC = SpectrumSpec(6)
VSPEC = SpectrumSpec(None)
LC = LightcurveSpec("FLUXCAL")


def common(n, ids=None, ra=None, dec=None):
    return {"object_id": pa.array(ids or [f"o{i}" for i in range(n)]),
            "ra": pa.array(ra if ra is not None else np.linspace(1, 2, n)),
            "dec": pa.array(dec if dec is not None else np.linspace(-1, 1, n)),
            "survey": pa.array(["t"] * n), "release": pa.array(["v1"] * n), "split": pa.array(["train"] * n)}


def image_table(n=3):
    rng = np.random.default_rng(0)
    flux = rng.normal(size=(n, 2, 5, 4)).astype(np.float32)
    ivar = np.ones_like(flux)
    mask = np.zeros(flux.shape, bool)
    mask[0, 1, 2, 3] = True
    img = image_array(IMG, flux, ivar, mask, np.full((n, 2), 1.1), 0.262)
    return pa.table({**common(n), "image": img}), flux, ivar, mask


def test_units_and_shapes_survive_a_parquet_round_trip(tmp_path):
    schema = dataset_schema({"image": IMG, "spectrum": SPEC}, [pa.field("z", pa.float32())])
    t, flux, _, mask = image_table()
    n = 3
    lam = np.tile(np.linspace(4000, 5000, 6), (n, 1))
    spec = spectrum_array(SPEC, lam, np.ones((n, 6)), np.ones((n, 6)), np.zeros((n, 6), bool), np.ones((n, 6)))
    t = conform(t.append_column("spectrum", spec).append_column("z", pa.array([0.1, 0.2, 0.3])), schema)
    pq.write_table(t, tmp_path / "x.parquet")
    back = pq.read_table(tmp_path / "x.parquet")
    f = back.schema.field("image").type
    assert f.field("flux").metadata[b"unit"] == b"nanomaggy"
    assert f.field("psf_fwhm").metadata[b"unit"] == b"arcsec"
    assert back.schema.field("spectrum").type.field("lambda").metadata[b"unit"] == b"Angstrom"
    assert back.schema.field("ra").metadata[b"unit"] == b"deg"
    assert modalities_of(back.schema) == {"image": IMG, "spectrum": SPEC}
    row = back.column("image")[0].as_py()
    np.testing.assert_array_equal(np.array(row["flux"], np.float32), flux[0])
    assert np.array(row["mask"])[1, 2, 3] and np.array(row["mask"]).sum() == 1
    assert row["band"] == ["legacysurvey-g", "legacysurvey-r"]
    assert back.column("z").type == pa.float32()


def test_hf_features_declare_fixed_shapes_and_load(tmp_path):
    datasets = pytest.importorskip("datasets")
    schema = dataset_schema({"image": IMG, "lightcurve": LC})
    feats = hf_features(schema, modalities_of(schema))
    assert feats["image"]["flux"] == datasets.Array3D((2, 5, 4), "float32")
    assert feats["image"]["mask"] == datasets.Array3D((2, 5, 4), "bool")
    assert feats["image"]["psf_fwhm"] == datasets.List(datasets.Value("float32"), length=2)
    assert feats["lightcurve"]["time"] == datasets.List(datasets.Value("float64"))
    t, flux, _, _ = image_table()
    lc = lightcurve_array(LC, [[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]],
                          [["lsst-g", "lsst-r"], ["lsst-u"], ["lsst-y"] * 3],
                          [[1, 2], [3], [4, 5, 6]], [[0.1, 0.1], [0.2], [0.3] * 3],
                          [[False, True], [False], [False] * 3])
    t = conform(t.append_column("lightcurve", lc), schema)
    pq.write_table(t, tmp_path / "d.parquet")
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "d.parquet"), features=feats, split="train")
    ds = ds.with_format("numpy")
    np.testing.assert_array_equal(ds[0]["image"]["flux"], flux[0])
    assert ds[0]["image"]["flux"].shape == (2, 5, 4)
    assert list(ds[1]["lightcurve"]["band"]) == ["lsst-u"]
    assert list(ds[0]["lightcurve"]["mask"]) == [False, True]


def test_builders_cannot_pass_wrong_shapes():
    with pytest.raises(ValueError, match="do not match"):
        image_array(IMG, np.zeros((1, 3, 5, 4)), np.zeros((1, 3, 5, 4)), np.zeros((1, 3, 5, 4), bool),
                    np.ones((1, 3)), 0.2)
    with pytest.raises(ValueError, match=r"expected \[n, 6\]"):
        spectrum_array(SPEC, np.ones((1, 5)), np.ones((1, 5)), np.ones((1, 5)), np.zeros((1, 5), bool), np.ones((1, 5)))


def test_conform_names_missing_extra_and_uncastable_columns():
    schema = dataset_schema({}, [pa.field("mag", pa.float32())])
    base = common(2)
    with pytest.raises(SchemaMismatch, match=r"missing column\(s\) \['mag'\]"):
        conform(pa.table(base), schema)
    with pytest.raises(SchemaMismatch, match="'zz'"):
        conform(pa.table({**base, "mag": pa.array([1.0, 2.0]), "zz": pa.array([1, 2])}), schema)
    with pytest.raises(SchemaMismatch, match="column 'mag' has type string"):
        conform(pa.table({**base, "mag": pa.array(["a", "b"])}), schema)
    ok = conform(pa.table({**base, "mag": pa.array([1, 2])}), schema)  # int -> float32 is safe
    assert ok.column("mag").type == pa.float32() and ok.column_names[0] == "object_id"


def _problems(table, mods, **kw):
    return {(p.row, p.column): p.reason for p in validate_rows(table, mods, **kw)}


def test_validator_flags_coordinates_ids_and_duplicates():
    t = pa.table({**common(6, ids=["a", "b", "", "d", "a", "f"],
                           ra=[1.0, np.nan, 3.0, 400.0, 5.0, 359.9], dec=[0.0, 0.0, 0.0, 0.0, 0.0, -91.0])})
    got = _problems(t, {})
    assert got == {(1, "ra"): "ra is NaN, inf or missing", (2, "object_id"): "missing or empty object_id",
                   (3, "ra"): "ra outside [0, 360) deg", (4, "object_id"): "duplicate object_id within this input",
                   (5, "dec"): "dec outside [-90, 90] deg"}


def test_validator_spectrum_rules_respect_the_mask():
    n = 5
    lam = np.tile(np.linspace(4000, 5000, 6), (n, 1))
    flux = np.ones((n, 6))
    ivar = np.ones((n, 6))
    mask = np.zeros((n, 6), bool)
    flux[0, 2] = np.nan
    mask[0, 2] = True          # masked NaN: fine
    flux[1, 3] = np.inf        # unmasked inf: bad
    ivar[2] = 0                # no information
    ivar[3, 1] = -1            # negative ivar
    lam[4, 3] = lam[4, 2]      # not strictly increasing
    spec = spectrum_array(SPEC, lam, flux, ivar, mask, np.ones((n, 6)))
    got = _problems(pa.table({**common(n), "spectrum": spec}), {"spectrum": SPEC})
    assert set(got) == {(1, "spectrum.flux"), (2, "spectrum.ivar"), (3, "spectrum.ivar"), (4, "spectrum.lambda")}
    assert "all-zero ivar" in got[(2, "spectrum.ivar")]
    assert "negative" in got[(3, "spectrum.ivar")]


def test_validator_variable_spectra_lightcurves_and_images():
    spec = pa.StructArray.from_arrays(
        [pa.array([[1.0, 2.0], [1.0, 2.0]], pa.list_(pa.float32())),
         pa.array([[1.0, 2.0], [1.0]], pa.list_(pa.float32())),
         pa.array([[1.0, 1.0], [1.0, 1.0]], pa.list_(pa.float32())),
         pa.array([[False, False], [False, False]], pa.list_(pa.bool_())),
         pa.array([[1.0, 1.0], [1.0, 1.0]], pa.list_(pa.float32()))],
        fields=list(pa.struct([f for f in dataset_schema({"s": VSPEC}).field("s").type])))
    got = _problems(pa.table({**common(2), "s": spec}), {"s": VSPEC})
    assert set(got) == {(1, "s.flux")} and "length" in got[(1, "s.flux")]

    lc = lightcurve_array(LC, [[1.0, 2.0], [3.0], []], [["lsst-g", "LSST r"], ["lsst-u"], []],
                          [[1, 2], [3], []], [[0.1, 0.1], [0.0], []], [[False, False], [False], []])
    got = _problems(pa.table({**common(3), "lightcurve": lc}), {"lightcurve": LC})
    assert set(got) == {(0, "lightcurve.band"), (1, "lightcurve.flux_err"), (2, "lightcurve.time")}

    t, *_ = image_table()
    img = t.column("image").combine_chunks()
    psf = pa.FixedSizeListArray.from_arrays(pa.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0], pa.float32()), 2)
    fields = [img.field(i) if img.type[i].name != "psf_fwhm" else psf for i in range(img.type.num_fields)]
    img2 = pa.StructArray.from_arrays(fields, fields=list(img.type), mask=pa.array([False, False, True]))
    got = _problems(t.set_column(t.column_names.index("image"), "image", img2), {"image": IMG})
    reason = "psf_fwhm not positive in a band with unmasked pixels"
    assert got == {(1, "image.psf_fwhm"): reason, (2, "image"): "modality is missing"}
    assert _problems(t.set_column(t.column_names.index("image"), "image", img2), {"image": IMG},
                     allow_null_modalities=True) == {(1, "image.psf_fwhm"): reason}
    # a band without coverage (all pixels masked) may have no PSF, as in DR10 (psfsize_i = 0)
    n = 2
    flux = np.ones((n, 2, 5, 4), np.float32)
    mask = np.zeros(flux.shape, bool)
    mask[1, 0] = True
    uncovered = image_array(IMG, flux, np.ones_like(flux), mask, np.array([[1.0, 1.0], [0.0, 1.2]]), 0.262)
    assert _problems(pa.table({**common(n), "image": uncovered}), {"image": IMG}) == {}
