"""Survey builders: one small module per survey, each reading its archive format into
standardized rows (see `mmu.builder.Builder`). Importing this package registers them all."""
