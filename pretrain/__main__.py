"""`python -m mmu.pretrain --config ...` (and `torchrun --nproc_per_node N -m mmu.pretrain ...`)."""
import sys

from mmu.pretrain.cli import main

sys.exit(main())
