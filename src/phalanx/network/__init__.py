"""Who talks to whom: topologies (star, gossip graphs). Transport and peer sampling come later."""

from phalanx.network.topology import GRAPHS, TOPOLOGIES, Gossip, NeighbourTable, Star

__all__ = ["GRAPHS", "TOPOLOGIES", "Gossip", "NeighbourTable", "Star"]
