"""Who talks to whom, and how: topologies (star, gossip graphs, committee) for the simulation;
peer sampling (:mod:`.sampling`: Basalt, Brahms, push-pull) and peer scores (:mod:`.scoring`); for
deployed nodes, signed and encrypted envelopes (:mod:`.envelope`), message bodies
(:mod:`.messages`), the peers a node knows (:mod:`.peers`), admission at the door
(:mod:`.admission`), the node's files (:mod:`.config`), the HTTP app (:mod:`.app`) and its client
(:mod:`.client`)."""

from phalanx.network.topology import GRAPHS, TOPOLOGIES, Committee, Gossip, NeighbourTable, Star

__all__ = ["GRAPHS", "TOPOLOGIES", "Committee", "Gossip", "NeighbourTable", "Star"]
