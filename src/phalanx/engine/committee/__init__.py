"""Committee mode, as a protocol core: n validators certify each round's aggregate.

Pure and deterministic, with no I/O, so the node daemon (a transport, a clock) and the
simulator drive the same code:

- :mod:`.statements`: the signed statements, q = floor(2n/3) + 1, the rotating sequencer;
- :mod:`.validator`: one validator's PBFT-style state machine for a round (Castro and Liskov
  1999): proposal, echo, vote, certificate, view change on a stall;
- :mod:`.recompute`: the aggregate every validator recomputes bit for bit;
- :mod:`.certificate`: certificates, conflicting pairs and the other evidence;
- :mod:`.promises`: signed inclusion promises and missed ones (censorship);
- :mod:`.finality`: checkpoints final at q witness cosignatures, conflicts kept, stalls noticed;
- :mod:`.ledger`: a certificate or evidence as a ledger entry, and its re-check.

``spin/committee.pml`` models the round protocol; ``tests/test_spin.py`` checks it with SPIN.
"""

from phalanx.engine.committee.certificate import Certificate, Evidence, conflicting
from phalanx.engine.committee.finality import CheckpointGate
from phalanx.engine.committee.promises import PromiseBook, promise
from phalanx.engine.committee.recompute import Recomputer, aggregate_batch, digest
from phalanx.engine.committee.statements import (
    Echo,
    Promise,
    Proposal,
    Signed,
    StatementError,
    ViewChange,
    Vote,
    quorum,
    sequencer,
    sign,
    tolerated,
    value_of,
    verify,
)
from phalanx.engine.committee.validator import Validator

__all__ = ["Certificate", "CheckpointGate", "Echo", "Evidence", "Promise", "PromiseBook", "Proposal", "Recomputer",
           "Signed", "StatementError", "Validator", "ViewChange", "Vote", "aggregate_batch", "conflicting", "digest",
           "promise", "quorum", "sequencer", "sign", "tolerated", "value_of", "verify"]
