"""Survey builders: one small module per survey, each reading its archive format into
standardized rows (see `mmu.engine.builder.Builder`). Importing this package registers them all.

Modules import each other relatively: this package installs as `mmu.builders`."""
from . import desi, gaia, hsc, legacysurvey, plasticc, sdss, sim_truth, tess  # noqa: F401  (importing registers them)
