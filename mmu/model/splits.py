"""Train / val / test splits as a pure function of sky position.

HEALPix pixels (nested) at a fixed order are mapped to a split by a keyed hash of the pixel
number, so every dataset (and every paired catalog) agrees on which sky is held out, a build
never needs to see another build, and partitions at or above the split order never mix splits.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from mmu.model.schema import SPLITS


@dataclass(frozen=True)
class SplitDefinition:
    order: int = 4
    seed: int = 20261122
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    method: str = "healpix-sha256-v1"

    def __post_init__(self):
        if not 0 <= self.order <= 12:
            raise ValueError(f"split order {self.order} out of range 0..12")
        total = self.train + self.val + self.test
        if min(self.train, self.val, self.test) < 0 or abs(total - 1.0) > 1e-9:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {total}")

    def as_dict(self) -> dict:
        """The definition as build.json's `split` records it (without the hash)."""
        return {"method": self.method, "order": self.order, "seed": self.seed,
                "fractions": {"train": self.train, "val": self.val, "test": self.test}}

    @property
    def hash(self) -> str:
        """sha256 of `as_dict()`: what tasks and results carry to pin the split."""
        blob = json.dumps(self.as_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def pixel_split(self, pixel: int) -> str:
        """The split of one nested HEALPix pixel at the split order: a keyed hash of the pixel
        number mapped to [0, 1) against the cumulative fractions.

        Args:
            pixel: the pixel number at `order`.

        Returns:
            ``"train"``, ``"val"`` or ``"test"``.
        """
        digest = hashlib.sha256(f"{self.method}:{self.seed}:{self.order}:{int(pixel)}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        if u < self.train:
            return "train"
        return "val" if u < self.train + self.val else "test"

    def pixels(self, ra, dec) -> np.ndarray:
        """Nested HEALPix pixel at the split order, computed exactly as HATS partitions do.

        Args:
            ra, dec: positions in degrees (arrays of equal length).

        Returns:
            int64 pixel numbers at `order`: the HATS spatial index (order 29) of each position,
            taken to `order` by `hats.pixel_math.spatial_index_to_healpix`.

        Example:
            >>> SplitDefinition().pixels([0.0, 180.0], [89.9, -30.0]).tolist()
            [255, 1548]
        """
        from hats.pixel_math import compute_spatial_index, spatial_index_to_healpix

        index = compute_spatial_index(np.asarray(ra, float), np.asarray(dec, float))
        return np.asarray(spatial_index_to_healpix(index, target_order=self.order), np.int64)

    def assign(self, ra, dec) -> np.ndarray:
        """The split of each position, a pure function of where it is on the sky.

        Args:
            ra: right ascension in degrees (array).
            dec: declination in degrees (array of the same length).

        Returns:
            An object array of ``"train"`` / ``"val"`` / ``"test"``.

        Example:
            >>> SplitDefinition().assign([10.0], [5.0]).tolist()   # doctest: +SKIP
            ['train']
        """
        pix = self.pixels(ra, dec)
        if len(pix) == 0:
            return np.array([], dtype=object)
        unique, inverse = np.unique(pix, return_inverse=True)
        labels = np.array([self.pixel_split(p) for p in unique], dtype=object)
        return labels[inverse]

    def split_of_partition(self, order: int, pixel: int) -> str:
        """The split of a HATS partition at `order` >= the split order: that of the pixel
        containing it at the split order (`HealpixPixel.convert_to_lower_order`).

        Args:
            order: the partition's HEALPix order.
            pixel: its nested pixel number.

        Returns:
            ``"train"``, ``"val"`` or ``"test"``.

        Raises:
            ValueError: `order` is below the split order (the partition could mix splits).
        """
        from hats.pixel_math import HealpixPixel

        if order < self.order:
            raise ValueError(f"partition order {order} is below the split order {self.order}: "
                             "it could mix splits")
        parent = HealpixPixel(order, int(pixel)).convert_to_lower_order(order - self.order)
        return self.pixel_split(parent.pixel)


def most_restrictive(*splits: str) -> str:
    """test over val over train (a pair with any member in test is test)."""
    rank = {s: i for i, s in enumerate(SPLITS)}
    return max(splits, key=lambda s: rank[s])
