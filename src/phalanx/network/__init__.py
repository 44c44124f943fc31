"""Who talks to whom: topologies (star, gossip graphs, committee). The transport comes later."""

from phalanx.network.topology import GRAPHS, TOPOLOGIES, Committee, Gossip, NeighbourTable, Star

__all__ = ["GRAPHS", "TOPOLOGIES", "Committee", "Gossip", "NeighbourTable", "Star"]
