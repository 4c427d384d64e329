"""k-hop sub-graph mini-batches in plain torch (PyG's NeighborLoader needs pyg-lib/torch-sparse).

``Adjacency`` holds a CSR view of a directed edge list; ``sample_khop`` grows a node set from seed nodes
for ``num_hops`` hops, keeping at most ``fanout`` random neighbours per frontier node (all of them when
``fanout`` is None, which equals ``torch_geometric.utils.k_hop_subgraph``), and returns the induced
sub-graph with the seeds first. ``khop_batches`` shuffles all nodes into seed batches (anchor: 64
neighbours x 4 hops, batch 1024 for SGRL).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


class Adjacency:
    """CSR of ``edge_index`` [2, E] (messages flow src -> dst; neighbours of v are the srcs into v)."""

    def __init__(self, edge_index: torch.Tensor, num_nodes: int):
        dst, src = edge_index[1], edge_index[0]
        order = torch.argsort(dst, stable=True)
        self.col = src[order]
        self.rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
        self.rowptr[1:] = torch.cumsum(torch.bincount(dst, minlength=num_nodes), 0)
        self.edge_index = edge_index
        self.num_nodes = num_nodes

    def neighbours(
        self, nodes: torch.Tensor, fanout: int | None, gen: torch.Generator | None
    ) -> torch.Tensor:
        """[K] neighbour ids of ``nodes`` with at most ``fanout`` per node (random when more exist)."""
        start, end = self.rowptr[nodes], self.rowptr[nodes + 1]
        deg = end - start
        total = int(deg.sum())
        if total == 0:
            return torch.zeros(0, dtype=torch.long)
        seg = torch.repeat_interleave(torch.arange(len(nodes)), deg)
        first = torch.cumsum(deg, 0) - deg
        pos = torch.arange(total) - first[seg] + start[seg]
        nbr = self.col[pos]
        if fanout is None or int(deg.max()) <= fanout:
            return nbr
        # random rank inside each segment: sort by (segment, uniform key)
        key = seg.double() * 2.0 + torch.rand(total, generator=gen, dtype=torch.float64)
        order = torch.argsort(key)
        rank = torch.arange(total) - first[seg[order]]
        return nbr[order[rank < fanout]]


@dataclass
class SubGraph:
    """nodes [n] global ids (seeds first); edge_index [2, e] local ids; edge_ids [e] into the parent."""

    nodes: torch.Tensor
    edge_index: torch.Tensor
    edge_ids: torch.Tensor
    num_seeds: int


def sample_khop(
    adj: Adjacency,
    seeds: torch.Tensor,
    num_hops: int,
    fanout: int | None = None,
    gen: torch.Generator | None = None,
) -> SubGraph:
    """Induced sub-graph on the sampled k-hop neighbourhood of ``seeds`` (seeds keep positions 0..S-1)."""
    seeds = torch.unique(seeds, sorted=False) if len(seeds) else seeds
    seen = torch.zeros(adj.num_nodes, dtype=torch.bool)
    seen[seeds] = True
    order = [seeds]
    frontier = seeds
    for _ in range(num_hops):
        nbr = adj.neighbours(frontier, fanout, gen)
        nbr = torch.unique(nbr)
        nbr = nbr[~seen[nbr]]
        if len(nbr) == 0:
            break
        seen[nbr] = True
        order.append(nbr)
        frontier = nbr
    nodes = torch.cat(order)
    local = torch.full((adj.num_nodes,), -1, dtype=torch.long)
    local[nodes] = torch.arange(len(nodes))
    ei = adj.edge_index
    keep = seen[ei[0]] & seen[ei[1]]
    edge_ids = keep.nonzero().flatten()
    return SubGraph(nodes, local[ei[:, edge_ids]], edge_ids, len(seeds))


def khop_batches(
    adj: Adjacency,
    batch_size: int,
    num_hops: int,
    fanout: int | None,
    gen: torch.Generator | None = None,
    nodes: torch.Tensor | None = None,
) -> Iterator[SubGraph]:
    """One shuffled epoch of k-hop sub-graphs whose seeds cover ``nodes`` (default: all nodes)."""
    nodes = torch.arange(adj.num_nodes) if nodes is None else nodes
    perm = nodes[torch.randperm(len(nodes), generator=gen)]
    for i in range(0, len(perm), batch_size):
        yield sample_khop(adj, perm[i : i + batch_size], num_hops, fanout, gen)
