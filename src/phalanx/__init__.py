"""Phalanx: secure decentralized learning, and a range that pits attacks against its defenses."""

import os

# Transparent huge pages for PyTorch's large CPU allocations (read once, at torch's first
# allocation, so before torch is imported): a fresh 400 MB tensor is then written in about 34 ms
# instead of 150 ms, most of which was spent faulting in 4 KB pages (measured on 2 cores).
# Rows of updates are allocated round after round, so this speeds up every rule that returns
# new rows. A user's own setting wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
