"""Symmetrised proposals: average a flow's density over atom permutations that leave the target unchanged.

A permutation g of identical atoms that maps the bond graph onto itself, such as the 180 degree flip of a
symmetric planar group (the two oxygens of a carboxylate; a Phe or Tyr ring: CD1<->CD2, CE1<->CE2 and their
hydrogens; the two NH2 of an Arg guanidinium), leaves the force-field energy unchanged, u(g.x) = u(x), so the
Boltzmann density is invariant under the group G that such permutations generate. (Amber's improper torsions
break this slightly: the outer atoms of an improper are ordered by atom index, so a relabelled group gets a
marginally different improper energy; for the Tyr ring flip over 100 MD frames of IY, std 0.013 kT and at most
0.05 kT. The proposal density below is exact either way, so SNIS stays consistent.) A flow trained on MD need
not be invariant: each training trajectory shows one labelling of a slowly flipping group, and the flow
inherits an arbitrary preference. The symmetrised proposal

    q_G(x) = (1/|G|) sum_g q(g.x)

is drawn by sampling x ~ q and relabelling it by a uniformly random g. It is an exact density, invariant
under G, and since the chi-square divergence is convex and p is invariant, chi2(p || q_G) <= chi2(p || q):
the importance weights p/q_G are never worse in expectation (up to the improper term above). It costs |G|
flow evaluations per sample and no extra energy evaluations.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from scifm.core.errors import ConfigError

__all__ = ["FLIP_PAIRS", "SymmetrisedFlow", "flip_group"]

_RING = (("CD1", "CD2"), ("CE1", "CE2"), ("HD1", "HD2"), ("HE1", "HE2"))
# residue -> atom pairs exchanged by a 180 degree flip of a symmetric side-chain group (Amber names);
# "CTER": the carboxylate of a zwitterionic C-terminus
FLIP_PAIRS = {
    "PHE": _RING,
    "TYR": _RING,
    "ASP": (("OD1", "OD2"),),
    "GLU": (("OE1", "OE2"),),
    "ARG": (("NH1", "NH2"), ("HH11", "HH21"), ("HH12", "HH22")),
    "CTER": (("O", "OXT"),),
}
KINDS = ("rings", "flips")


def flip_group(topology, kind: str = "flips", max_size: int = 64) -> torch.Tensor:
    """All 2^k combinations of the k flips of an OpenMM topology, as index arrays [2^k, N] (row 0 is the
    identity; x[:, row] relabels the atoms). `kind`: "rings" (Phe, Tyr) or "flips" (rings, carboxylates
    of Asp, Glu and the C-terminus, Arg guanidinium). A residue missing one of the atoms of its flip is an
    error naming it."""
    if kind not in KINDS:
        raise ConfigError(f"symmetry: kind must be one of {KINDS}, got {kind!r}")
    atoms = list(topology.atoms())
    flips = []
    for res in topology.residues():
        idx = {a.name: a.index for a in res.atoms()}
        groups = [("", FLIP_PAIRS.get(res.name))]
        if "OXT" in idx:
            groups.append(("C-terminus of ", FLIP_PAIRS["CTER"]))
        for what, pairs in groups:
            if pairs is None or (kind == "rings" and pairs is not _RING):
                continue
            missing = [n for pair in pairs for n in pair if n not in idx]
            if missing:
                raise ConfigError(
                    f"flip of {what}{res.name}{res.index + 1}: atoms {missing} not in the topology"
                )
            flips.append([(idx[a], idx[b]) for a, b in pairs])
    if 2 ** len(flips) > max_size:
        raise ConfigError(f"{len(flips)} flips give a group of {2 ** len(flips)} > {max_size} elements")
    group = []
    for on in itertools.product((False, True), repeat=len(flips)):
        p = list(range(len(atoms)))
        for use, flip in zip(on, flips, strict=True):
            if use:
                for i, j in flip:
                    p[i], p[j] = j, i
        group.append(p)
    return torch.tensor(group, dtype=torch.long)


class SymmetrisedFlow(nn.Module):
    """q_G(x) = mean over g of q(x[:, g]) for a group of atom permutations `group` [G, N] (row 0 the
    identity; the rows must be closed under composition). Same sampling interface as the wrapped flow."""

    def __init__(self, flow: nn.Module, group: torch.Tensor):
        super().__init__()
        group = torch.as_tensor(group, dtype=torch.long)
        if group.ndim != 2 or group.shape[0] < 1:
            raise ConfigError(f"symmetry group: expected index arrays [G, N], got shape {tuple(group.shape)}")
        ident = torch.arange(group.shape[1])
        if not torch.equal(group[0], ident):
            raise ConfigError("symmetry group: row 0 must be the identity")
        rows = {tuple(r.tolist()) for r in group}
        for a in group:
            for b in group:
                if tuple(a[b].tolist()) not in rows:
                    raise ConfigError("symmetry group: the permutations are not closed under composition")
        self.flow = flow
        self.register_buffer("group", group, persistent=False)

    @property
    def config(self):
        return self.flow.config

    @property
    def group_size(self) -> int:
        return int(self.group.shape[0])

    def log_prob(self, x: torch.Tensor, cond=None, perms=None, mask=None) -> torch.Tensor:
        """log q_G(x) [B] for standardised Cartesian x [B, N, 3]."""
        if x.shape[1] != self.group.shape[1]:
            raise ConfigError(f"symmetry group of {self.group.shape[1]} atoms, got x with {x.shape[1]}")
        B = x.shape[0]
        if cond is not None:
            cond = {k: v.expand(B, *v.shape[1:]) for k, v in cond.items()}
        if perms is not None:
            perms = perms.expand(B, *perms.shape[1:])
        lq = torch.stack([self.flow.log_prob(x[:, g], cond, perms, mask) for g in self.group.to(x.device)])
        return torch.logsumexp(lq, 0) - math.log(self.group_size)

    def sample(self, n: int, cond=None, perms=None, batch_size: int = 1024, generator=None, progress=None):
        """n draws (x [n, N, 3], log q_G(x) [n]): flow samples relabelled by uniformly random group
        elements."""
        x, _ = self.flow.sample(n, cond, perms, batch_size, generator, progress)
        pick = torch.randint(self.group_size, (n,), generator=generator).to(x.device)
        index = self.group.to(x.device)[pick]  # [n, N]
        x = torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))
        with torch.no_grad():
            lq = torch.cat([self.log_prob(xb, cond, perms) for xb in x.split(max(1, int(batch_size)))])
        return x, lq

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.flow.parameters())
