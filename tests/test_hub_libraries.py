"""The hub and shard layers use libraries where a library does the job (issue 14): hats for
HEALPix pixels, dask for byte sizes, webdataset's TarWriter for shards, one atomic-write helper.
Each test pins that the library gives exactly what the hand-written code it replaced gave."""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import tarfile

import numpy as np
import pytest

from mmu.hub.layout import atomic_path, atomic_write, atomic_write_json
from mmu.model.splits import SplitDefinition

# -------------------------------------------------------------------------------------------------
# HEALPix: hats functions, identical to the bit shifts they replaced


def _positions(n: int = 200_000, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Uniform on the sphere, plus the poles, the RA wrap and pixel-boundary latitudes."""
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    eps = 1e-12
    edge_ra = np.array([0.0, eps, 360.0 - 1e-9, np.nextafter(360.0, 0), 359.9999999, 180.0, 90.0, 45.0,
                        0.0, 360.0 - 1e-9, 123.4, 0.0, np.nextafter(360.0, 0), 270.0])
    edge_dec = np.array([90.0, -90.0, 89.9999999, -89.9999999, 0.0, np.nextafter(90.0, 0), -90.0,
                         41.8103149, -41.8103149, 41.8103149, 89.0, -0.0, -89.0, 19.47122063])
    # a grid that crosses RA 0/360 near both poles
    g_ra, g_dec = np.meshgrid(np.concatenate([np.linspace(359.9, 360.0 - 1e-9, 50), np.linspace(0, 0.1, 50)]),
                              np.concatenate([np.linspace(-90, -89.5, 20), np.linspace(89.5, 90, 20)]))
    return (np.concatenate([ra, edge_ra, g_ra.ravel()]), np.concatenate([dec, edge_dec, g_dec.ravel()]))


def test_split_pixels_equal_the_bit_shifts_they_replaced():
    from hats.pixel_math.spatial_index import compute_spatial_index

    ra, dec = _positions()
    h29 = np.asarray(compute_spatial_index(ra, dec), np.int64)
    for order in (0, 1, 4, 6, 12):
        split = SplitDefinition(order=order)
        new = split.pixels(ra, dec)
        old = h29 >> (2 * (29 - order))
        assert new.dtype == np.int64
        np.testing.assert_array_equal(new, old)
        assert new.min() >= 0 and new.max() < 12 * 4**order
    # the labels too (the splits are a pure function of these pixels)
    split = SplitDefinition()
    old_labels = np.array([split.pixel_split(p) for p in (h29 >> (2 * (29 - split.order)))], dtype=object)
    np.testing.assert_array_equal(split.assign(ra, dec), old_labels)


def test_split_pixels_are_pinned():
    """Pinned values: a change in how pixels are computed would move objects between splits."""
    split = SplitDefinition()
    assert split.pixels([0.0, 180.0, 0.0, 359.9999999], [89.9, -30.0, -90.0, 0.0]).tolist() == [255, 1548, 2048, 1173]
    labels = split.assign(*_positions(20_000, seed=3))
    counts = {s: int((labels == s).sum()) for s in ("train", "val", "test")}
    assert counts == {"train": 20041, "val": 2019, "test": 1954}


def test_split_of_partition_equals_the_bit_shift():
    rng = np.random.default_rng(5)
    split = SplitDefinition()
    for order in (4, 5, 7, 11, 29):
        for pixel in [0, 12 * 4**order - 1, *rng.integers(0, 12 * 4**order, 300).tolist()]:
            old = split.pixel_split(pixel >> (2 * (order - split.order)))
            assert split.split_of_partition(order, pixel) == old, (order, pixel)
    with pytest.raises(ValueError, match="below the split order"):
        split.split_of_partition(3, 5)


def test_sim_healpix_nest_equals_cdshealpix():
    import astropy.units as u
    from astropy.coordinates import Latitude, Longitude
    from cdshealpix.nested import lonlat_to_healpix

    from mmu.sim.footprint import healpix_nest

    ra, dec = _positions(20_000)
    old = np.asarray(lonlat_to_healpix(Longitude(ra * u.deg), Latitude(dec * u.deg), 6), np.int64)
    np.testing.assert_array_equal(healpix_nest(ra, dec, 6), old)
    assert healpix_nest(10.0, 20.0, 6).shape == (1,)


# -------------------------------------------------------------------------------------------------
# byte sizes: dask.utils.parse_bytes units (MB = 10**6, MiB = 2**20)


def test_parse_size_uses_dask_units_and_names_bad_input():
    from mmu.shards.export import ExportError, export_wds, parse_size

    assert parse_size("256MiB") == 256 * 2**20
    assert parse_size("256MB") == 256 * 10**6
    assert parse_size("4 KiB") == 4096 and parse_size("4kB") == 4000 and parse_size("1.5GB") == 1_500_000_000
    assert parse_size("100") == 100 and parse_size(4096) == 4096
    for bad in ("", "lots", "-1MB", "0", 0, "5 parsecs"):
        with pytest.raises(ExportError, match="shard size .*256MiB"):
            parse_size(bad)
    # the default target is the same number of bytes as before the unit change (256 * 2**20)
    assert parse_size(inspect.signature(export_wds).parameters["shard_size"].default) == 256 * 2**20


def test_sizes_are_printed_in_dask_units():
    from mmu.cli.fetch import _size

    assert _size(500) == "500 B" and _size(1234) == "1.21 kiB" and _size(256 * 2**20) == "256.00 MiB"


# -------------------------------------------------------------------------------------------------
# the one atomic-write helper


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "f.json"
    atomic_write_json(target, {"b": 1, "a": np.float32(0.5)})
    assert json.loads(target.read_text()) == {"a": "0.5", "b": 1}
    assert target.read_text().startswith('{\n  "a"')  # sorted, indented
    atomic_write(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
    atomic_write(target, "text\n", fsync=True)
    assert target.read_text() == "text\n"
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            assert tmp.name.startswith(".f.json.tmp-")
            raise RuntimeError("interrupted")
    assert target.read_text() == "text\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.json"]
    with pytest.raises(TypeError, match="bytes or str"):
        atomic_write(target, {"not": "bytes"})
    assert target.read_text() == "text\n"


# -------------------------------------------------------------------------------------------------
# shards: webdataset.TarWriter


def _reference_tar(samples) -> bytes:
    """The hand-written writer this replaced (tarfile, USTAR, mtime 0, mode 0644), with each
    sample's members in sorted order, as TarWriter writes them."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, files in samples:
            for ext in sorted(files):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(files[ext]), 0, 0o644
                tar.addfile(info, io.BytesIO(files[ext]))
    return buf.getvalue()


def _samples(n: int = 6):
    from mmu.shards.format import encode_sample, sample_key

    rng = np.random.default_rng(0)
    for i in range(n):
        oid = f"obj.{i}/x"
        yield sample_key(oid), encode_sample(
            {"object_id": oid, "ra": float(i), "dec": np.float64(-i)},
            {"image.flux": rng.normal(size=(2, 4, 4)).astype(np.float32), "image.band": np.array(["a-g", "a-r"]),
             "spectrum.mask": rng.random(7) < 0.5})


def test_write_tar_gives_the_reference_bytes_and_reads_back(tmp_path):
    import webdataset as wds

    from mmu.shards.format import decode_sample, iter_tar, write_tar

    samples = list(_samples())
    info = write_tar(tmp_path / "shards" / "shard-train-000000.tar", iter(samples))
    path = tmp_path / "shards" / info["name"]
    data = path.read_bytes()
    assert data == _reference_tar(samples)
    assert info == {"name": "shard-train-000000.tar", "samples": len(samples), "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest()}
    assert write_tar(tmp_path / "again.tar", iter(samples))["sha256"] == info["sha256"]  # deterministic
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime, m.mode) for m in members} == {(0, 0, "", "", 0, 0o644)}
    assert [m.name for m in members[:4]] == ["obj_0_x.image.band.npy", "obj_0_x.image.flux.npy",
                                             "obj_0_x.json", "obj_0_x.spectrum.mask.npy"]
    raw = list(iter_tar(path))
    assert [r["__key__"] for r in raw] == [k for k, _ in samples]
    assert all(r[ext] == files[ext] for r, (_, files) in zip(raw, samples) for ext in files)
    decoded = [decode_sample(s) for s in wds.WebDataset(str(path), shardshuffle=False, empty_check=False)]
    assert decoded[3]["meta"] == {"object_id": "obj.3/x", "ra": 3.0, "dec": -3.0}
    np.testing.assert_array_equal(decoded[3]["image"]["band"], ["a-g", "a-r"])
    assert sorted(p.name for p in path.parent.iterdir()) == [info["name"]]


def test_write_tar_rejects_bad_keys_and_leaves_nothing(tmp_path):
    from mmu.shards.format import write_tar

    with pytest.raises(ValueError, match="sample key 'a.b'"):
        write_tar(tmp_path / "s.tar", [("ok", {"json": b"{}"}), ("a.b", {"json": b"{}"})])
    with pytest.raises(ValueError, match="bytes"):
        write_tar(tmp_path / "s.tar", [("ok", {"json": {"not": "bytes"}})])
    assert list(tmp_path.iterdir()) == []


def test_trainer_reader_reads_tarwriter_shards(tmp_path):
    pytest.importorskip("torch")
    from mmu.pretrain.data import iter_shard
    from mmu.shards.format import write_tar

    samples = list(_samples())
    write_tar(tmp_path / "s.tar", samples)
    got = list(iter_shard(str(tmp_path / "s.tar"), lambda ext: ext != "image.band.npy"))
    assert [g["__key__"] for g in got] == [k for k, _ in samples]
    assert all(set(g) - {"__key__", "__url__"} == set(f) - {"image.band.npy"} for g, (_, f) in zip(got, samples))
    assert got[2]["json"] == samples[2][1]["json"]
