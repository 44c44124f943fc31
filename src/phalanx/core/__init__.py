"""Foundations with no dependency on the rest of Phalanx: registries, seeding, hashing, the Merkle
tree, canonical encoding, keys and commitments."""

from phalanx.core.registry import PluginError, Registry, UnknownPluginError

__all__ = ["PluginError", "Registry", "UnknownPluginError"]
