"""`python -m mmu.sim ...` = `mmu sim ...`."""
import sys

from mmu.sim.cli import main

sys.exit(main())
