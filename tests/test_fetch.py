"""`mmu fetch`: real-format files served by a local fake archive (directory listings, Range
requests, a connection cut mid-file) land where each builder's `list_inputs` finds them and
read back as rows; `--limit` limits; a cut download resumes from its `.part`; an unreachable
archive, a dataset without a download and a missing option are clear errors.

The archive files are written by the builder tests' writers (from the survey data models); the
builders' module constant `ARCHIVE` is pointed at the local server. Offline, CPU, seconds.
"""
from __future__ import annotations

import functools
import http.server
import logging
import socket
import threading
from pathlib import Path

import pytest

import mmu.builders.desi as desi_mod
import mmu.builders.legacysurvey as ls_mod
import mmu.builders.plasticc as plasticc_mod
import mmu.builders.sdss as sdss_mod
from mmu.builders._common import FetchError, download
from mmu.cli import main
from mmu.engine.builder import get_builder
from mmu.registry.catalog import load_catalog
from test_builder_desi import write_pair
from test_builder_helpers import read_all
from test_builder_legacysurvey import write_brick
from test_builder_plasticc import write_csvs
from test_builder_sdss import spec_name, write_spec


class ArchiveHandler(http.server.SimpleHTTPRequestHandler):
    """Directory listings and files (SimpleHTTPRequestHandler), plus `Range: bytes=N-` (206 /
    416), an optional cut-off (send `cut[path]` bytes of a file, then drop the connection), and a
    log of every request as (path, Range header)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        path = self.path.split("?", 1)[0]
        rng = self.headers.get("Range")
        srv.log.append((path, rng))
        local = Path(self.translate_path(path))
        if not local.is_file() or (rng is None and path not in srv.cut) or (rng and not srv.ranges):
            return super().do_GET()
        data = local.read_bytes()
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        body = data[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if path in srv.cut:  # promise the whole body, send part of it, hang up
            self.wfile.write(body[:srv.cut[path]])
            self.close_connection = True
            return None
        self.wfile.write(body)
        return None


@pytest.fixture
def archive(tmp_path):
    """(root directory served, base URL, server) of a fake archive on 127.0.0.1."""
    root = tmp_path / "archive"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(ArchiveHandler, directory=str(root)))
    server.log, server.cut, server.ranges = [], {}, True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


def builder_of(dataset: str):
    entry = load_catalog().dataset(dataset)
    return get_builder(entry.builder).from_options(entry.builder_config)


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def fetch(capsys, *args) -> tuple[int, str, str]:
    """Run `mmu fetch`; returns (exit code, stdout, stderr plus the log lines of `mmu.*`)."""
    lines = _Lines()
    logging.getLogger("mmu").addHandler(lines)
    try:
        code = main(["fetch", *args, "--no-progress"])
    finally:
        logging.getLogger("mmu").removeHandler(lines)
    out = capsys.readouterr()
    return code, out.out, out.err + "\n".join(lines.lines)


def file_gets(server) -> list[str]:
    return [p for p, _ in server.log if not p.endswith("/")]


# --------------------------------------------------------------------------------- DESI


def test_desi_limit_pixels_land_where_the_builder_reads_them(archive, tmp_path, monkeypatch, capsys):
    root, url, server = archive
    dr1 = root / "desi/dr1"
    for hpix in (1000, 1001, 1002):
        write_pair(dr1, "main", "dark", hpix=hpix, targetids=(hpix * 10 + 1, hpix * 10 + 2))
    for survey, program in [("main", "bright"), ("sv3", "dark"), ("sv3", "bright"), ("sv1", "dark"), ("sv1", "bright")]:
        (dr1 / "spectro/redux/iron/healpix" / survey / program).mkdir(parents=True)
    monkeypatch.setattr(desi_mod, "ARCHIVE", url + "/desi/dr1/spectro/redux/{specprod}/healpix/")
    raw = tmp_path / "raw"

    code, out, err = fetch(capsys, "desi_dr1", "--raw", str(raw), "--limit", "2")
    assert code == 0, err
    builder = builder_of("desi_dr1")
    inputs = builder.list_inputs(raw)
    assert [i.key for i in inputs] == ["healpix-1000", "healpix-1001"]  # --limit 2: not 1002
    assert sorted(Path(p).name for p in inputs[0].paths) == ["coadd-main-dark-1000.fits",
                                                             "redrock-main-dark-1000.fits"]
    for i in inputs:  # the archive layout, byte for byte
        for p in i.paths:
            rel = Path(p).relative_to(raw)
            assert Path(p).read_bytes() == (root / rel).read_bytes()
    table, rejections = read_all(builder, inputs[1])
    assert not rejections and sorted(table["targetid"].to_pylist()) == [10011, 10012]
    assert "2 raw input(s) for desi_dr1" in out and "next: mmu build desi_dr1 --raw" in out

    # a rerun downloads nothing again
    server.log.clear()
    code, out, _ = fetch(capsys, "desi_dr1", "--raw", str(raw), "--limit", "2")
    assert code == 0 and file_gets(server) == [] and "0 downloaded" in out and "4 already here" in out


# --------------------------------------------------------------------------------- Legacy Survey


def test_legacysurvey_bricks_limit_and_a_brick_not_in_the_archive(archive, tmp_path, monkeypatch, capsys):
    root, url, server = archive
    write_brick(root / "ls/dr10", brick="1501p021")
    write_brick(root / "ls/dr10", brick="1502p021")
    monkeypatch.setattr(ls_mod, "ARCHIVE", url + "/ls/dr10/{region}/")
    raw = tmp_path / "raw"

    code, out, err = fetch(capsys, "legacysurvey_dr10_south", "--raw", str(raw),
                           "--bricks", "1501p021,0001m002", "1502p021", "--limit", "2")
    assert code == 0, err
    assert "skipped brick 0001m002" in err and "HTTP 404" in err  # a warning, through logging
    assert "10 file(s) (10 downloaded" in out and "; 1 skipped" in out
    assert not any("1502p021" in p for p in file_gets(server))  # the third brick is past --limit
    builder = builder_of("legacysurvey_dr10_south")
    inputs = builder.list_inputs(raw)
    assert [i.key for i in inputs] == ["south/1501p021"]
    assert len(inputs[0].paths) == 10  # tractor + maskbits + image/invvar x g,r,i,z
    table, rejections = read_all(builder, inputs[0])
    assert not rejections and table.num_rows == 4 and set(table["brickname"].to_pylist()) == {"1501p021"}


def test_legacysurvey_needs_valid_bricks(tmp_path, capsys):
    code, _, err = fetch(capsys, "legacysurvey_dr10_south", "--raw", str(tmp_path))
    assert code == 2 and "--bricks" in err and "0001m002" in err
    code, _, err = fetch(capsys, "legacysurvey_dr10_south", "--raw", str(tmp_path), "--bricks", "M31")
    assert code == 2 and "'M31'" in err and "not brick names" in err


# --------------------------------------------------------------------------------- SDSS


def test_sdss_limit_counts_spectra_across_plates(archive, tmp_path, monkeypatch, capsys):
    root, url, _ = archive
    lite = root / "sas/dr17/sdss/spectro/redux/26/spectra/lite"
    for plate in (266, 267):
        for fiber in (1, 2, 3):
            write_spec(lite / f"{plate:04d}" / spec_name(plate, 51630, fiber), plate=plate, fiber=fiber, seed=fiber)
    monkeypatch.setattr(sdss_mod, "ARCHIVE", url + "/sas/dr17/{tree}/spectro/redux/{run2d}/spectra/lite/")
    raw = tmp_path / "raw"

    code, _, err = fetch(capsys, "sdss_dr17", "--raw", str(raw), "--limit", "4")
    assert code == 0, err
    builder = builder_of("sdss_dr17")
    inputs = builder.list_inputs(raw)
    assert [(Path(i.key).name, len(i.paths)) for i in inputs] == [("0266", 3), ("0267", 1)]
    table, rejections = read_all(builder, inputs[1])
    assert not rejections and table["object_id"].to_pylist() == ["0267-51630-0001"]

    # BOSS/eBOSS reductions live under eboss/, not sdss/: not served yet, a clear HTTP 404 naming the URL
    code, _, err = fetch(capsys, "sdss_dr17", "--raw", str(raw), "--run2d", "v5_13_2")
    assert code == 1 and "HTTP 404" in err and "/eboss/spectro/redux/v5_13_2/spectra/lite/" in err
    # served: BOSS plates land in the SAS layout beside the SDSS-I/II ones and read back as BOSS rows
    boss = root / "sas/dr17/eboss/spectro/redux/v5_13_2/spectra/lite"
    for fiber in (10, 999):
        write_spec(boss / "3586" / spec_name(3586, 55181, fiber), plate=3586, mjd=55181, fiber=fiber,
                   seed=fiber, boss=True)
    code, _, err = fetch(capsys, "sdss_dr17", "--raw", str(raw), "--run2d", "v5_13_2")
    assert code == 0, err
    assert sorted(q.name for q in (raw / "sdss/dr17/eboss/spectro/redux/v5_13_2/spectra/lite/3586").iterdir()) == [
        spec_name(3586, 55181, 10), spec_name(3586, 55181, 999)]
    inputs = builder.list_inputs(raw)
    boss_input = next(i for i in inputs if "3586" in i.key)
    table, rejections = read_all(builder, boss_input)
    assert not rejections
    assert table["object_id"].to_pylist() == ["3586-55181-0010", "3586-55181-0999"]
    assert set(table["spectrograph"].to_pylist()) == {"BOSS"}
    # an unknown reduction is a usage error, named
    code, _, err = fetch(capsys, "sdss_dr17", "--raw", str(raw), "--run2d", "v9")
    assert code == 2 and "run2d 'v9' is not a DR17 optical reduction" in err


# --------------------------------------------------------------------------------- PLAsTiCC


def test_plasticc_limit_is_the_training_set(archive, tmp_path, monkeypatch, capsys):
    root, url, _ = archive
    write_csvs(root / "zenodo", n_obj=5)
    monkeypatch.setattr(plasticc_mod, "ARCHIVE", url + "/zenodo/")
    raw = tmp_path / "raw"

    code, _, err = fetch(capsys, "plasticc_2018", "--raw", str(raw), "--limit", "1")
    assert code == 0, err
    builder = builder_of("plasticc_2018")
    inputs = builder.list_inputs(raw)
    assert [i.key for i in inputs] == ["plasticc/plasticc_train_lightcurves.csv.gz"]
    assert Path(inputs[0].paths[1]).name == "plasticc_train_metadata.csv.gz"
    table, rejections = read_all(builder, inputs[0])
    assert not rejections and table.num_rows == 5

    # without --limit the test set is fetched too: this archive lacks it, and the error says so
    code, _, err = fetch(capsys, "plasticc_2018", "--raw", str(raw))
    assert code == 1 and "plasticc_test_metadata.csv.gz" in err and "HTTP 404" in err
    assert "2 file(s) done so far are kept" in err


# --------------------------------------------------------------------------------- Gaia


def test_gaia_limit_takes_xp_files_with_their_overlapping_source_and_ap_files(archive, tmp_path, monkeypatch,
                                                                               capsys):
    pytest.importorskip("gaiaxpy")  # the mock projects its SEDs with GaiaXPy's design matrices
    import numpy as np
    import pandas as pd

    import mmu.builders.gaia as gaia_mod
    import mmu.sim.gaia as sim_gaia

    root, url, server = archive
    rng = np.random.default_rng(5)
    stars = pd.DataFrame({"ra": [10.0, 10.1, 200.0], "dec": [-5.0, -5.1, 40.0], "teff": [5000.0, 6000.0, 7000.0],
                          "logg": 4.0, "mh": 0.0, "gmag": [13.0, 14.0, 15.0]})
    written = sim_gaia.write_gaia(stars, root / "cdn", rng)  # two HEALPix-8 ranges, three tables each
    assert len(written) == 6
    monkeypatch.setattr(gaia_mod, "ARCHIVE", url + "/cdn/gaia/gdr3/")
    raw = tmp_path / "raw"

    code, out, err = fetch(capsys, "gaia_dr3", "--raw", str(raw), "--limit", "1")
    assert code == 0, err
    fetched = sorted(p for p, _ in server.log if p.endswith(".csv.gz"))
    first = sorted(p.name for p in written)[0].split("_", 1)[1]  # the lower HEALPix range
    assert sorted(Path(p).name for p in fetched) == sorted(f"{t}_{first}" for t in (
        "AstrophysicalParameters", "GaiaSource", "XpContinuousMeanSpectrum"))  # --limit 1: one range
    builder = builder_of("gaia_dr3")
    inputs = builder.list_inputs(raw)
    assert [i.key for i in inputs] == [f"XpContinuousMeanSpectrum_{first.removesuffix('.csv.gz')}"]
    for p in inputs[0].paths:  # the archive layout, byte for byte
        assert Path(p).read_bytes() == (root / "cdn" / Path(p).relative_to(raw)).read_bytes()
    table, rejections = read_all(builder, inputs[0])
    xp = pd.read_csv(inputs[0].paths[0], comment="#", na_values=["null"])
    assert not rejections and table["source_id"].to_pylist() == xp["source_id"].tolist()
    assert 1 <= table.num_rows < 3  # the other range's stars are not in this input
    assert "1 raw input(s) for gaia_dr3" in out and "3 downloaded" in out

    # without --limit the second range comes too; the first is already here
    code, out, err = fetch(capsys, "gaia_dr3", "--raw", str(raw))
    assert code == 0, err
    assert "3 downloaded" in out and "3 already here" in out and len(builder.list_inputs(raw)) == 2
    with pytest.raises(SystemExit):
        main(["fetch", "--help"])
    assert "cdn.gea.esa.int/Gaia/gdr3/" in capsys.readouterr().out


# --------------------------------------------------------------------------------- resuming


def test_a_download_cut_mid_file_resumes_from_its_part(archive, tmp_path, monkeypatch, capsys):
    root, url, server = archive
    lc, _, _, _ = write_csvs(root / "zenodo", n_obj=40)
    monkeypatch.setattr(plasticc_mod, "ARCHIVE", url + "/zenodo/")
    raw = tmp_path / "raw"
    full = lc.read_bytes()
    cut = len(full) // 3
    server.cut["/zenodo/plasticc_train_lightcurves.csv.gz"] = cut

    code, _, err = fetch(capsys, "plasticc_2018", "--raw", str(raw), "--limit", "1")
    dest = raw / "plasticc/plasticc_train_lightcurves.csv.gz"
    part = dest.with_name(dest.name + ".part")
    assert code == 1 and "plasticc_train_lightcurves.csv.gz" in err and "rerun the same command" in err
    assert not dest.exists() and part.read_bytes() == full[:cut]

    server.cut.clear()
    server.log.clear()
    code, out, err = fetch(capsys, "plasticc_2018", "--raw", str(raw), "--limit", "1")
    assert code == 0, err
    assert ("/zenodo/plasticc_train_lightcurves.csv.gz", f"bytes={cut}-") in server.log
    assert "already here" in err and "resumed at" in err  # the metadata was done; the rest resumed
    assert "2 file(s) (1 downloaded" in out and "1 already here" in out
    assert dest.read_bytes() == full and not part.exists()


def test_download_part_edge_cases(archive, tmp_path):
    root, url, server = archive
    (root / "f.bin").write_bytes(bytes(range(256)) * 40)
    full = (root / "f.bin").read_bytes()
    # a .part that is already whole: the server answers 416, the file is completed as it is
    dest = tmp_path / "a/f.bin"
    dest.parent.mkdir()
    dest.with_name("f.bin.part").write_bytes(full)
    assert download(url + "/f.bin", dest).read_bytes() == full
    # a server that ignores Range sends everything (200): the .part is replaced, not appended to
    server.ranges = False
    dest = tmp_path / "b/f.bin"
    dest.parent.mkdir()
    dest.with_name("f.bin.part").write_bytes(b"garbage")
    assert download(url + "/f.bin", dest).read_bytes() == full
    with pytest.raises(FetchError) as e:
        download(url + "/missing.bin", tmp_path / "c/missing.bin")
    assert e.value.status == 404 and e.value.url.endswith("/missing.bin")


# --------------------------------------------------------------------------------- errors


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_archive_is_a_clear_error(tmp_path, monkeypatch, capsys):
    base = f"http://127.0.0.1:{closed_port()}/public/dr1/spectro/redux/{{specprod}}/healpix/"
    monkeypatch.setattr(desi_mod, "ARCHIVE", base)
    code, _, err = fetch(capsys, "desi_dr1", "--raw", str(tmp_path / "raw"), "--limit", "1")
    assert code == 1
    assert "cannot download desi_dr1" in err
    assert base.format(specprod="iron") + "main/dark/" in err  # the URL that failed
    assert "unreachable" in err and "HTTPS_PROXY" in err and "rerun the same command" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("dataset", ["sim_truth_v1", "sim_truth_transients_v1"])
def test_mock_only_dataset_has_nothing_to_fetch(dataset, tmp_path, capsys):
    code, _, err = fetch(capsys, dataset, "--raw", str(tmp_path))
    assert code == 2 and "mock only" in err and "mmu sim --out RAW" in err
    assert f"mmu build {dataset}" in err


def test_usage_errors(tmp_path, capsys):
    code, _, err = fetch(capsys, "nope_v1", "--raw", str(tmp_path))
    assert code == 2 and "no dataset 'nope_v1'" in err
    code, _, err = fetch(capsys, "desi_dr1", "--raw", str(tmp_path), "--bricks", "1126p222")
    assert code == 2 and "--bricks does not apply to desi_dr1" in err
    code, _, err = fetch(capsys, "desi_dr1", "--raw", str(tmp_path), "--limit", "0")
    assert code == 2 and "--limit" in err


def test_help_explains_source_size_and_next_step(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fetch", "--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0
    for words in ("mmu build NAME --raw RAW --hub HUB", "--limit", "--bricks", "--run2d", ".part",
                  "data.desi.lbl.gov", "portal.nersc.gov", "data.sdss.org", "zenodo.org", "GB"):
        assert words in text, words
    for d in load_catalog().datasets:
        assert d.name in text or (d.mock_only and "sim_truth_*" in text), d.name
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "mmu fetch" in capsys.readouterr().out
