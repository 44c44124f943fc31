"""Foundations with no dependency on the rest of Phalanx: registries, seeding, hashing."""

from phalanx.core.registry import PluginError, Registry, UnknownPluginError

__all__ = ["PluginError", "Registry", "UnknownPluginError"]
