"""One unreadable value rejects its row, not its file or input group (issue 16 item 3).

A stray non-ASCII byte (0xff) is patched into the raw bytes of one file written in the survey's
format (the writers of the builders' own tests), and a garbage line into a PLAsTiCC CSV. The
build must reject that row (or line) alone, name the file and column in the reason, and keep
every other row of the group exactly as a clean read gives it. Environment faults (a denied or
failed read) must still fail, never turn into rejections.
"""
from __future__ import annotations

import errno
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmu.engine.builder import get_builder
from test_builder_desi import write_pair
from test_builder_helpers import read_all
from test_builder_legacysurvey import make as make_legacysurvey
from test_builder_legacysurvey import write_brick
from test_builder_plasticc import write_csvs
from test_builder_sdss import spec_name, write_spec


def poke(path: Path, old: bytes, new: bytes, nth: int, expect: int) -> None:
    """Replace the `nth` (0-based) of exactly `expect` occurrences of `old` in the file's bytes."""
    assert len(old) == len(new)
    data = path.read_bytes()
    at, starts = -1, []
    while (at := data.find(old, at + 1)) >= 0:
        starts.append(at)
    assert len(starts) == expect, f"{old!r} occurs {len(starts)} times in {path.name}"
    i = starts[nth]
    path.write_bytes(data[:i] + new + data[i + len(old):])


def clean_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rows_by_id(table) -> dict[str, dict]:
    return {r["object_id"]: r for r in table.to_pylist()}


# --- desi: one HEALPix pixel, two programs' coadds --------------------------------------------

def desi_pixel(root: Path):
    write_pair(root, "main", "dark", targetids=(11, 12, 13))
    write_pair(root, "sv3", "dark", targetids=(12, 14), seed=1)


def test_desi_bad_spectype_rejects_that_target_only(tmp_path):
    desi_pixel(tmp_path / "raw")
    clean = clean_copy(tmp_path / "raw", tmp_path / "clean")
    redrock = next((tmp_path / "raw").rglob("redrock-main-dark-1000.fits"))
    # REDSHIFTS rows are written in reverse TARGETID order: 13, 12, 11; row 1 is TARGETID 12
    poke(redrock, b"GALAXY", b"GAL\xffXY", nth=1, expect=3)
    b = get_builder("desi")()
    [item] = b.list_inputs(tmp_path / "raw")
    table, rej = read_all(b, item)
    ref, ref_rej = read_all(b, b.list_inputs(clean)[0])
    assert ref_rej == [] and ref.num_rows == 5
    [r] = rej
    assert (r.input, r.object_id, r.row, r.column, r.file) == (
        "healpix-1000", "main-dark-12", 1, "spectype", "redrock-main-dark-1000.fits")
    assert "redrock-main-dark-1000.fits" in r.reason and "SPECTYPE" in r.reason and "0xff" in r.reason
    assert "TARGETID 12" in r.reason and "REDSHIFTS row 1" in r.reason
    # every other row of the pixel, the other program's coadd included, is kept as a clean read has it
    got, want = rows_by_id(table), rows_by_id(ref)
    assert sorted(got) == sorted(set(want) - {"main-dark-12"})
    for oid, row in got.items():
        if oid != "sv3-dark-12":
            assert row == want[oid], oid
    # with main-dark-12 rejected, TARGETID 12 has one spectrum left, and it is the primary one
    assert want["main-dark-12"]["primary"] and not want["sv3-dark-12"]["primary"]
    assert got["sv3-dark-12"]["primary"] and got["sv3-dark-12"]["zcat_nspec"] == 1
    assert {k: v for k, v in got["sv3-dark-12"].items() if k not in ("primary", "zcat_nspec")} == \
        {k: v for k, v in want["sv3-dark-12"].items() if k not in ("primary", "zcat_nspec")}


def test_desi_bad_fibermap_text_rejects_that_row_only(tmp_path):
    desi_pixel(tmp_path)
    coadd = next(tmp_path.rglob("coadd-sv3-dark-1000.fits"))
    poke(coadd, b"TGT", b"T\xffT", nth=1, expect=2)  # FIBERMAP OBJTYPE of row 1, TARGETID 14
    b = get_builder("desi")()
    table, rej = read_all(b, b.list_inputs(tmp_path)[0])
    [r] = rej
    assert (r.object_id, r.row, r.column, r.file) == ("sv3-dark-14", 1, "objtype", "coadd-sv3-dark-1000.fits")
    assert "coadd-sv3-dark-1000.fits FIBERMAP row 1 column OBJTYPE" in r.reason
    assert sorted(table.column("object_id").to_pylist()) == ["main-dark-11", "main-dark-12", "main-dark-13",
                                                            "sv3-dark-12"]


def test_desi_build_records_the_row_with_file_and_column(tmp_path, dask_client):
    """Through the engine: build.json lists the one row, the pixel is not a rejected input."""
    from mmu.engine.build import build

    desi_pixel(tmp_path / "raw")
    redrock = next((tmp_path / "raw").rglob("redrock-sv3-dark-1000.fits"))
    poke(redrock, b"GALAXY", b"\xffALAXY", nth=0, expect=2)  # row 0 = TARGETID 14
    res = build("desi_dr1", tmp_path / "raw", tmp_path / "hub", client=dask_client)
    manifest = json.loads((res.path / "build.json").read_text())
    assert manifest["rejected_inputs"] == []
    [r] = manifest["rejected_rows"]
    assert (r["input"], r["object_id"], r["column"], r["file"]) == (
        "healpix-1000", "sv3-dark-14", "spectype", "redrock-sv3-dark-1000.fits")
    assert "SPECTYPE" in r["reason"] and "redrock-sv3-dark-1000.fits" in r["reason"]
    assert manifest["rows"]["total"] == 4


# --- sdss: one plate directory -------------------------------------------------------------------

def test_sdss_bad_class_rejects_that_spectrum_only(tmp_path):
    for fiber in (1, 2, 3):
        write_spec(tmp_path / "raw" / "0266" / spec_name(266, 51630, fiber), fiber=fiber, seed=fiber)
    clean = clean_copy(tmp_path / "raw", tmp_path / "clean")
    poke(tmp_path / "raw" / "0266" / spec_name(266, 51630, 2), b"GALAXY", b"GALA\xffY", nth=0, expect=1)
    b = get_builder("sdss")()
    [item] = b.list_inputs(tmp_path / "raw")
    table, rej = read_all(b, item)
    ref, _ = read_all(b, b.list_inputs(clean)[0])
    [r] = rej
    name = spec_name(266, 51630, 2)
    assert (r.input, r.object_id, r.row, r.column, r.file) == ("0266", "0266-51630-0002", 0, "class", name)
    assert r.reason.startswith(f"{name} HDU 'SPECOBJ' row 0 column CLASS: byte 0xff")
    got, want = rows_by_id(table), rows_by_id(ref)
    assert sorted(got) == ["0266-51630-0001", "0266-51630-0003"]
    assert all(got[k] == want[k] for k in got)


# --- legacysurvey: one brick ---------------------------------------------------------------------

def test_legacysurvey_bad_type_rejects_that_source_only(tmp_path):
    _, tractor = write_brick(tmp_path / "raw")
    clean = clean_copy(tmp_path / "raw", tmp_path / "clean")
    poke(tractor, b"PSF", b"P\xffF", nth=0, expect=1)  # row 1 (objid 1) is the PSF source
    b = make_legacysurvey()
    [item] = b.list_inputs(tmp_path / "raw")
    table, rej = read_all(b, item)
    ref, ref_rej = read_all(b, b.list_inputs(clean)[0])
    assert ref_rej == [] and ref.num_rows == 4
    [r] = rej
    assert (r.object_id, r.row, r.column, r.file) == ("1501p021-1", 1, "type", "tractor-1501p021.fits")
    assert "tractor-1501p021.fits HDU 1 row 1 (objid 1) column type: byte 0xff" in r.reason
    got, want = rows_by_id(table), rows_by_id(ref)
    assert sorted(got) == sorted(set(want) - {"1501p021-1"})
    assert all(got[k] == want[k] for k in got)


# --- plasticc: one light-curve CSV and its metadata ------------------------------------------------

def small_blocks():
    return get_builder("plasticc").from_options({"block_bytes": 2048, "chunk_objects": 2})


@pytest.mark.parametrize("gz", [False, True])
def test_plasticc_garbage_lines_rejected_rest_of_file_kept(tmp_path, gz):
    lc_path, meta_path, lc, meta = write_csvs(tmp_path / "clean", gz=gz)
    b = small_blocks()
    ref, ref_rej = read_all(b, b.list_inputs(tmp_path / "clean")[0])
    assert ref_rej == [] and ref.num_rows == 6
    lines = (gzip.decompress(lc_path.read_bytes()) if gz else lc_path.read_bytes()).splitlines(keepends=True)
    # line numbers count the header as line 1; line 1 + k is the k-th data row (object 100 + k // 40)
    lines.insert(50, b"\xff\xfe\x00garbage\n")  # becomes line 51: not CSV at all
    cut = lines[120].split(b",")
    cut[3] = b"1O.5"  # line 121 (object 102): a letter O in the flux
    lines[120] = b",".join(cut)
    raw = tmp_path / "raw"
    raw.mkdir()
    body = b"".join(lines)
    (raw / lc_path.name).write_bytes(gzip.compress(body) if gz else body)
    shutil.copy(meta_path, raw / meta_path.name)
    table, rej = read_all(b, b.list_inputs(raw)[0])
    assert [(r.row, r.object_id, r.column, r.file) for r in rej] == [
        (51, None, None, lc_path.name), (121, "102", "flux", lc_path.name)]
    assert all(r.reason.startswith(f"{lc_path.name} line {r.row}: ") for r in rej)
    assert "fields where the header has 6" in rej[0].reason
    assert "column flux" in rej[1].reason and "1O.5" in rej[1].reason
    # every object survives; only object 102 lost the one epoch of the bad line
    got, want = rows_by_id(table), rows_by_id(ref)
    assert sorted(got) == sorted(want)
    for oid in got:
        if oid != "102":
            assert got[oid] == want[oid], oid
    g, w = got["102"]["lightcurve"], want["102"]["lightcurve"]
    drop = 121 - 2 - 80 - 1  # the bad line's index within object 102's 40 epochs (one line inserted above)
    assert len(g["time"]) == 39
    for k in ("time", "flux", "flux_err", "band"):
        assert g[k] == w[k][:drop] + w[k][drop + 1:], k


def test_plasticc_garbage_metadata_line_rejects_that_line(tmp_path):
    lc_path, meta_path, lc, meta = write_csvs(tmp_path, gz=False)
    lines = meta_path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b",", b";", 2)  # object 102's metadata: 2 separators garbled
    meta_path.write_bytes(b"".join(lines))
    b = small_blocks()
    table, rej = read_all(b, b.list_inputs(tmp_path)[0])
    assert sorted(table.column("object_id").to_pylist()) == ["100", "101", "103", "104", "105"]
    by_row = {r.row: r for r in rej}
    assert by_row[4].file == meta_path.name and meta_path.name in by_row[4].reason
    assert by_row[4].object_id is None and "fields where the header has" in by_row[4].reason
    # the object whose metadata line was left out is rejected by the light-curve pass, by name
    assert "no row in the metadata CSV" in by_row[82].reason and by_row[82].object_id == "102"
    assert len(rej) == 2


def test_plasticc_clean_file_parsed_identically_fast_and_careful(tmp_path):
    """The careful path (used once a file has a bad line) parses good lines as the fast one."""
    from mmu.builders.plasticc import LC_TYPES, _batches, _header

    lc_path, *_ = write_csvs(tmp_path, gz=True, n_obj=9)
    names = _header(lc_path)
    include = [n for n in names if n in LC_TYPES]
    types = {k: LC_TYPES[k] for k in include}
    out = {}
    for careful in (False, True):
        parts = list(_batches(lc_path, names, include, types, 4096, careful))
        out[careful] = ({k: np.concatenate([p[0][k].to_numpy() for p in parts]) for k in include},
                        np.concatenate([p[1] for p in parts]))
    for k in include:
        np.testing.assert_array_equal(out[True][0][k], out[False][0][k])
    np.testing.assert_array_equal(out[True][1], out[False][1])
    assert out[True][1][0] == 2 and len(out[True][1]) == 9 * 40


# --- environment faults stay failures ----------------------------------------------------------

def deny(monkeypatch, name: str, err: int):
    """astropy's fits.open fails with `err` (as the OS would) for files called `name`."""
    from astropy.io import fits

    real = fits.open

    def fake(path, *a, **k):
        if Path(path).name == name:
            raise OSError(err, "simulated", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(fits, "open", fake)


@pytest.mark.parametrize("err", [errno.EACCES, errno.EIO])
def test_environment_faults_propagate_not_rejected(tmp_path, monkeypatch, err):
    for fiber in (1, 2):
        write_spec(tmp_path / "sdss" / "0266" / spec_name(266, 51630, fiber), fiber=fiber)
    desi_pixel(tmp_path / "desi")
    deny(monkeypatch, spec_name(266, 51630, 2), err)
    deny(monkeypatch, "redrock-sv3-dark-1000.fits", err)
    for survey in ("sdss", "desi"):
        b = get_builder(survey)()
        [item] = b.list_inputs(tmp_path / survey)
        with pytest.raises(OSError) as e:
            read_all(b, item)
        assert e.value.errno == err, survey
    # a file that is merely not FITS is still a rejection of that file, not a failure
    (tmp_path / "sdss" / "0266" / spec_name(266, 51630, 1)).write_bytes(b"junk".ljust(2880))
    monkeypatch.undo()
    b = get_builder("sdss")()
    table, rej = read_all(b, b.list_inputs(tmp_path / "sdss")[0])
    assert table.num_rows == 1 and [r.object_id for r in rej] == ["0266-51630-0001"]


def test_plasticc_environment_fault_propagates(tmp_path, monkeypatch):
    write_csvs(tmp_path, gz=True)
    real = gzip.open

    def failing(path, *a, **k):
        if str(path).endswith("plasticc_train_lightcurves.csv.gz"):
            raise OSError(errno.EIO, "simulated", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(gzip, "open", failing)
    b = small_blocks()
    with pytest.raises(OSError) as e:
        read_all(b, b.list_inputs(tmp_path)[0])
    assert e.value.errno == errno.EIO

