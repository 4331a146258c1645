"""The data model: the row schema, row validation, sky splits, content hashing."""
