"""The `mmu` command line: `mmu.cli.main` is the console script. One module per command group."""
from mmu.cli.main import main, make_parser

__all__ = ["main", "make_parser"]
