"""The registry: catalog.yaml (datasets and benchmark tasks) and their citations."""
