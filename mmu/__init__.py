"""mmu: a Multimodal Universe style dataset hub, contrastive pretraining suite and benchmark.

`import mmu` stays light: no torch, no Dask cluster, nothing from `mmu.pretrain` or `mmu.eval`.
"""
from mmu._layout import install_sibling_finder

__version__ = "0.1.0"

# builders/, pretrain/ and eval/ sit beside mmu/ in the repository and become mmu.builders,
# mmu.pretrain and mmu.eval when installed (pyproject's package-dir). When Python runs from a
# checkout whose mmu/ shadows an installed copy, this finder maps those three names to the sibling
# folders; in an installed wheel it does nothing. Why and when: mmu/_layout.py, docs/architecture.md.
install_sibling_finder(__name__, __path__[0])
