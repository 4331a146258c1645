"""The build engine's errors (re-exported by `mmu.engine.build`)."""
from __future__ import annotations


class BuildError(RuntimeError):
    """A build that cannot go on; the message says which dataset, input or option, and why."""


class BuildLocked(BuildError):
    """Another build of the same dataset into the same hub holds the dataset's lock."""


class HubNotWritable(BuildError):
    """The hub folder (or its staging folder) cannot be created or written, and the dataset is not
    already up to date there (an up-to-date check writes nothing)."""
