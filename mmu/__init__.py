"""mmu: a Multimodal Universe style dataset hub, contrastive pretraining suite and benchmark.

`import mmu` stays light: no torch, no Dask cluster, nothing from `mmu.pretrain` or `mmu.eval`.
"""
from mmu._layout import install_sibling_finder

__version__ = "0.1.0"

install_sibling_finder(__name__, __path__[0])
