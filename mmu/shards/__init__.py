"""Training shards: the WebDataset shard format and `mmu export-wds`."""
