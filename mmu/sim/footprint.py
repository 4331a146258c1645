"""Where the mock sky is: footprints, field centres, the Legacy Survey brick grid, HEALPix.

A footprint decides the sky positions; the brick grid (0.25 deg rows and columns, names
`<RRRR>{p|m}<DDD>` as in the real survey-bricks table) and HEALPix (nested) decide how files are
cut. Field centres sit on a boundary between brick rows so that every field spans several bricks
and exercises the `brick_primary` overlaps.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from mmu.sim.config import rng_for

#: DECaLS/DES-like southern footprint used for random field centres
DEC_RANGE = (-65.0, 32.0)
MIN_ABS_GAL_LAT = 20.0
MIN_FIELD_SEPARATION_DEG = 5.0
MAX_FIELDS = 300


@dataclass(frozen=True)
class Footprint:
    kind: str  # "fields" | "uniform"
    n_fields: int = 0
    box: tuple = ()

    @property
    def spec(self) -> str:
        if self.kind == "fields":
            return f"fields:{self.n_fields}"
        return "uniform:" + ",".join(f"{v:g}" for v in self.box)


def default_n_fields(galaxies: int) -> int:
    return int(min(200, max(12, math.ceil(galaxies / 50))))


def parse_footprint(spec: str | None, galaxies: int) -> Footprint:
    """'fields:N' | 'fields:auto' | 'uniform:RA0,RA1,DEC0,DEC1' (degrees)."""
    spec = (spec or "fields:auto").strip()
    kind, _, arg = spec.partition(":")
    if kind == "fields":
        n = default_n_fields(galaxies) if arg in ("", "auto") else int(arg)
        if not 1 <= n <= MAX_FIELDS:
            raise ValueError(f"footprint {spec!r}: N must be in 1..{MAX_FIELDS} "
                             f"(fields are kept > {MIN_FIELD_SEPARATION_DEG} deg apart)")
        return Footprint("fields", n_fields=n)
    if kind == "uniform":
        try:
            ra0, ra1, dec0, dec1 = (float(v) for v in arg.split(","))
        except ValueError:
            raise ValueError(f"footprint {spec!r}: expected uniform:RA0,RA1,DEC0,DEC1 in degrees") from None
        if not (0 <= ra0 < ra1 <= 360 and -90 <= dec0 < dec1 <= 90):
            raise ValueError(f"footprint {spec!r}: need 0 <= RA0 < RA1 <= 360, -90 <= DEC0 < DEC1 <= 90")
        return Footprint("uniform", box=(ra0, ra1, dec0, dec1))
    raise ValueError(f"unknown footprint {spec!r}; use 'fields:N', 'fields:auto' or "
                     "'uniform:RA0,RA1,DEC0,DEC1'")


def galactic_latitude(ra, dec) -> np.ndarray:
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    return SkyCoord(ra=np.atleast_1d(ra) * u.deg, dec=np.atleast_1d(dec) * u.deg).galactic.b.deg


def galactic_lb(ra, dec):
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    g = SkyCoord(ra=np.atleast_1d(ra) * u.deg, dec=np.atleast_1d(dec) * u.deg).galactic
    return g.l.deg, g.b.deg


def mw_ebv(ra, dec, rng) -> np.ndarray:
    """A smooth dust model standing in for SFD98: E(B-V) ~ 0.012 / sin|b|, lognormal scatter."""
    b = np.abs(galactic_latitude(ra, dec))
    return (0.005 + 0.012 / np.sin(np.radians(np.clip(b, 5, 90)))) * 10 ** rng.normal(0, 0.12, b.size)


def angular_separation_deg(ra1, dec1, ra2, dec2):
    r1, d1, r2, d2 = map(np.radians, (ra1, dec1, ra2, dec2))
    s = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0, 1))))


def field_centres(seed: int, n: int, brick_deg: float = 0.25) -> np.ndarray:
    """(n, 2) RA, Dec of field centres: > 5 deg apart, |b| > 20, snapped to a brick corner."""
    rng = rng_for(seed, "field-centres")
    s0, s1 = np.sin(np.radians(DEC_RANGE))
    out: list[tuple[float, float]] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200000:
            raise RuntimeError(f"could not place {n} fields {MIN_FIELD_SEPARATION_DEG} deg apart")
        ra = rng.uniform(0, 360)
        dec = np.degrees(np.arcsin(rng.uniform(s0, s1)))
        ra, dec = brick_corner_near(ra, dec, brick_deg)
        if abs(galactic_latitude(ra, dec)[0]) < MIN_ABS_GAL_LAT:
            continue
        if out:
            arr = np.asarray(out)
            if np.min(angular_separation_deg(arr[:, 0], arr[:, 1], ra, dec)) < MIN_FIELD_SEPARATION_DEG:
                continue
        out.append((ra, dec))
    return np.asarray(out)


# --- the brick grid ------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _rows(brick_deg: float):
    nrow = int(round(180 / brick_deg)) + 1
    dec_c = -90.0 + brick_deg * np.arange(nrow)
    nra = np.maximum(1, np.round(360 * np.cos(np.radians(dec_c)) / brick_deg).astype(np.int64))
    first_id = 1 + np.concatenate([[0], np.cumsum(nra)[:-1]])
    return dec_c, nra, first_id


def brick_index(ra, dec, brick_deg: float = 0.25):
    """(row, column) of the brick whose unique area holds each position."""
    dec_c, nra, _ = _rows(brick_deg)
    ra = np.mod(np.asarray(ra, float), 360.0)
    row = np.clip(np.floor((np.asarray(dec, float) + 90.0) / brick_deg + 0.5).astype(np.int64), 0, dec_c.size - 1)
    col = np.floor(ra / (360.0 / nra[row])).astype(np.int64) % nra[row]
    return row, col


def brick_info(row, col, brick_deg: float = 0.25) -> dict:
    """Name, id, centre and unique-area bounds of bricks (vectorised)."""
    dec_c, nra, first_id = _rows(brick_deg)
    row = np.atleast_1d(row)
    col = np.atleast_1d(col)
    width = 360.0 / nra[row]
    ra_c = (col + 0.5) * width
    dc = dec_c[row]
    names = np.array([f"{int(math.floor(r * 10 + 1e-6)):04d}{'p' if d >= 0 else 'm'}"
                      f"{int(math.floor(abs(d) * 10 + 1e-6)):03d}" for r, d in zip(ra_c, dc)])
    return {
        "brickname": names,
        "brickid": first_id[row] + col,
        "ra": ra_c,
        "dec": dc,
        "ra1": col * width,
        "ra2": (col + 1) * width,
        "dec1": np.maximum(dc - brick_deg / 2, -90.0),
        "dec2": np.minimum(dc + brick_deg / 2, 90.0),
    }


def brick_corner_near(ra: float, dec: float, brick_deg: float = 0.25) -> tuple[float, float]:
    """The nearest point on a boundary between two brick rows (RA unchanged), so that a field
    centred there spans at least two bricks."""
    dec_c, nra, _ = _rows(brick_deg)
    row = int(np.clip(np.floor((dec + 90.0) / brick_deg), 0, dec_c.size - 2))
    return float(ra), float(dec_c[row] + brick_deg / 2)


# --- HEALPix ------------------------------------------------------------------------------

def healpix_nest(ra, dec, order: int) -> np.ndarray:
    """Nested HEALPix pixel at `order` (nside = 2**order); DESI groups spectra at order 6.
    Computed by hats' `healpix_shim.radec2pix` (cdshealpix), as HATS computes pixels."""
    from hats.pixel_math.healpix_shim import radec2pix

    ra = np.atleast_1d(np.asarray(ra, float))
    dec = np.atleast_1d(np.asarray(dec, float))
    return np.asarray(radec2pix(order, ra, dec), dtype=np.int64)
