"""A hub on disk and on the Hugging Face Hub: the folder layout, build.json, the dataset card,
the generated format specification, and publishing (`mmu push`)."""
