"""A deployed node's side of the engine: its round driver and handlers (:mod:`.runtime`), its own
log (:mod:`.log`) and what it learns with (:mod:`.task`). Imported by ``phalanx node start``
only, so the simulation never loads the transport."""
