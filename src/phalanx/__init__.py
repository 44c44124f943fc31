"""Phalanx: secure decentralized learning, and a range that pits attacks against its defenses."""

__version__ = "0.1.0"
