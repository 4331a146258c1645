"""Survey builders: one small module per survey, each reading its archive format into
standardized rows (see `mmu.engine.builder.Builder`). Importing this package registers them all.

Modules import each other relatively: this package installs as `mmu.builders`."""
from . import desi, legacysurvey, plasticc, sdss, sim_truth  # noqa: F401  (importing registers them)
