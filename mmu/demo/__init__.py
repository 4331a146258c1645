"""`mmu demo`: the whole chain on a mock universe, its report and figures."""
