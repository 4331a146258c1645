"""`python -m mmu ...` is the `mmu` command."""
import sys

from mmu.cli import main

sys.exit(main())
