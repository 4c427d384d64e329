"""A single-system Boltzmann generator in internal coordinates (the classical baseline of Noé et al. 2019).

Where the Prose TarFlow is transferable across peptides and works on Cartesian tokens, this flow is built
for one molecule: a Z-matrix turns a conformation into 3N - 6 internal coordinates (bonds, angles,
torsions), and rational-quadratic neural-spline couplings (Durkan et al. 2019) model their joint law.

Internal coordinates (`build_zmatrix`): atoms are placed in breadth-first order from a central heavy atom;
atom i is placed from its bonded parent j (bond |x_i - x_j|), a placed neighbour k of j (angle i-j-k) and a
placed atom l (torsion i-j-k-l). l is a placed sibling (another neighbour of j) when there is one, so that
substituents get a torsion *relative* to their sibling (unimodal, e.g. about ±120° on an sp3 centre, its
sign fixed by chirality); otherwise l is a neighbour of k and the torsion is a proper one (the backbone
phi and psi of a peptide end up as proper torsions). The first three atoms carry b1, b2 and one angle.

A proper density on all 3N Cartesian coordinates (what the samplers reweight): a conformation is
x = R (y(ic) - mean(y)) + c with R uniform on SO(3) and c ~ N(0, I/N) (the same CoM law as Prose, in
standardised units), so

    log q(x) = log q_ic(ic) + log N(c; 0, I/N) - log(8 pi^2) - log J(ic),
    J = b1^2 * b2^2 sin(a2) * prod_{i>=3} b_i^2 sin(a_i)

(J is the volume element of Cartesian coordinates in (translation, rotation, internal coordinates),
with the Haar measure of SO(3) whose total volume is 8 pi^2; a test checks it against the autograd
Jacobian). With the sampler's `com_correction="gaussian"`, the source energy becomes
-log q_ic + log J + const: exactly the internal-coordinate Boltzmann generator's importance weight.

Flow on ic: bonds and angles are standardised with the training mean/std (base N(0, 1), splines on
[-B, B] with identity tails); torsions live on [-pi, pi] (base uniform, splines on the whole interval).
Coupling layers alternate between "transform the torsions given the rest", "the rest given the torsions"
and fixed random halves; conditioners are MLPs that see torsions through (cos, sin).

Interface: `sample(n, cond, perms, ...)` and `log_prob(x, cond, perms)` take and return standardised
Cartesian coordinates like `ProseFlow`, so `ProseSampler` (SNIS, SMC) and every metric work unchanged
(`cond`/`perms` are accepted and ignored: the flow knows its molecule).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from scifm.core.errors import ConfigError, DataError
from scifm.prose.tarflow import sample_in_batches, strict_from_dict

__all__ = [
    "ICFlow",
    "ICFlowConfig",
    "ICFlowTask",
    "build_zmatrix",
    "cartesian_log_jacobian",
    "dihedral",
    "ic_from_cartesian",
    "cartesian_from_ic",
    "rq_spline",
]

MODEL_NAME = "prose-icflow"
LOG_8PI2 = math.log(8 * math.pi**2)


# ----------------------------------------------------------------------------------------- Z-matrix
def build_zmatrix(n_atoms: int, bonds, elements=None) -> list[list[int]]:
    """Placement rows [i, j, k, l] (-1 where unused) in placement order for a connected molecule.

    Row 0: [root, -1, -1, -1]; row 1: [a1, root, -1, -1]; row 2: [a2, j, k, -1]; rows >= 3: full.
    `elements`: symbols, used to prefer heavy atoms (root = the most central heavy atom, heavy children
    first). Raises ConfigError for a disconnected graph or fewer than 3 atoms.
    """
    if n_atoms < 3:
        raise ConfigError(f"an internal-coordinate flow needs at least 3 atoms, got {n_atoms}")
    adj: list[set[int]] = [set() for _ in range(n_atoms)]
    for a, b in bonds:
        a, b = int(a), int(b)
        if not (0 <= a < n_atoms and 0 <= b < n_atoms) or a == b:
            raise ConfigError(f"bad bond ({a}, {b}) for {n_atoms} atoms")
        adj[a].add(b)
        adj[b].add(a)
    heavy = [e not in ("H", "h") for e in elements] if elements is not None else [True] * n_atoms

    def key(a: int):
        return (not heavy[a], a)

    def eccentricity(a: int) -> int:
        dist = {a: 0}
        queue = deque([a])
        while queue:
            u = queue.popleft()
            for v in adj[u]:
                if v not in dist:
                    dist[v] = dist[u] + 1
                    queue.append(v)
        return max(dist.values()) if len(dist) == n_atoms else n_atoms

    # root: a central heavy atom (smallest eccentricity; then highest degree, lowest index)
    root = min(range(n_atoms), key=lambda a: (not heavy[a], eccentricity(a), -len(adj[a]), a))
    parent = {root: -1}
    order = [root]
    queue = deque([root])
    while queue:
        a = queue.popleft()
        for b in sorted(adj[a], key=key):
            if b not in parent:
                parent[b] = a
                order.append(b)
                queue.append(b)
    if len(order) != n_atoms:
        missing = sorted(set(range(n_atoms)) - set(order))[:10]
        raise ConfigError(f"molecule graph is not connected (atoms {missing} unreachable from {root})")
    rank = {a: r for r, a in enumerate(order)}
    rows = [[root, -1, -1, -1], [order[1], root, -1, -1]]
    j2 = parent[order[2]]
    rows.append([order[2], j2, order[1] if j2 == root else root, -1])
    for i in order[3:]:
        j = parent[i]
        placed = [a for a in adj[j] if rank[a] < rank[i]]
        k = parent[j] if parent[j] != -1 else min((a for a in placed), key=lambda a: rank[a])
        siblings = [a for a in placed if a not in (k,)]
        if siblings:
            l = min(siblings, key=lambda a: rank[a])
        else:
            cands = [a for a in adj[k] if a != j and rank[a] < rank[i]]
            if not cands:
                cands = [a for a in order[: rank[i]] if a not in (j, k)]
            l = min(cands, key=lambda a: rank[a])
        rows.append([i, j, k, l])
    return rows


def _layout(zmatrix: list[list[int]]) -> tuple[list[int], list[int], list[int]]:
    """Indices into the ic vector of bonds, angles and torsions: [b1, b2, a2, (b, a, t) per row >= 3]."""
    n = len(zmatrix)
    bonds = [0, 1] + [3 + 3 * r for r in range(n - 3)]
    angles = [2] + [4 + 3 * r for r in range(n - 3)]
    tors = [5 + 3 * r for r in range(n - 3)]
    return bonds, angles, tors


# ------------------------------------------------------------------------------- geometry (batched)
def _norm(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def dihedral(p0, p1, p2, p3) -> torch.Tensor:
    """Torsion angle p0-p1-p2-p3 in (-pi, pi] for [..., 3] points."""
    b0 = p0 - p1
    b1 = _norm(p2 - p1)
    b2 = p3 - p2
    v = b0 - (b0 * b1).sum(-1, keepdim=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdim=True) * b1
    x = (v * w).sum(-1)
    y = (torch.cross(b1, v, dim=-1) * w).sum(-1)
    return torch.atan2(y, x)


def _angle(p0, p1, p2) -> torch.Tensor:
    u, v = p0 - p1, p2 - p1
    # atan2 of |u x v| and u.v: accurate near 0 and pi, unlike acos
    return torch.atan2(torch.cross(u, v, dim=-1).norm(dim=-1), (u * v).sum(-1))


def ic_from_cartesian(x: torch.Tensor, zmatrix: list[list[int]]) -> torch.Tensor:
    """x [B, N, 3] -> ic [B, 3N - 6] in the `_layout` order (same length units as x, radians)."""
    z = torch.as_tensor(zmatrix, device=x.device)
    (_, r1, r2), rest = zmatrix[:3], z[3:]
    b1 = (x[:, r1[0]] - x[:, r1[1]]).norm(dim=-1)
    b2 = (x[:, r2[0]] - x[:, r2[1]]).norm(dim=-1)
    a2 = _angle(x[:, r2[0]], x[:, r2[1]], x[:, r2[2]])
    pi, pj, pk, pl = (x[:, rest[:, c]] for c in range(4))
    b = (pi - pj).norm(dim=-1)
    a = _angle(pi, pj, pk)
    t = dihedral(pi, pj, pk, pl)
    return torch.cat([torch.stack([b1, b2, a2], -1), torch.stack([b, a, t], -1).flatten(1)], -1)


def cartesian_from_ic(ic: torch.Tensor, zmatrix: list[list[int]]) -> torch.Tensor:
    """ic [B, 3N - 6] -> x [B, N, 3] in the canonical frame (atom 0 at the origin, atom 1 on +x, atom 2 in
    the xy plane). Inverse of `ic_from_cartesian` up to a rigid motion."""
    B = ic.shape[0]
    N = len(zmatrix)
    pos: list[torch.Tensor | None] = [None] * N
    zero = ic.new_zeros(B)
    r0, r1, r2 = zmatrix[:3]
    pos[r0[0]] = ic.new_zeros(B, 3)
    pos[r1[0]] = torch.stack([ic[:, 0], zero, zero], -1)
    b2, a2 = ic[:, 1], ic[:, 2]
    e1 = _norm(pos[r2[2]] - pos[r2[1]])  # along +-x
    ey = torch.zeros_like(e1)
    ey[:, 1] = 1.0
    pos[r2[0]] = pos[r2[1]] + b2[:, None] * (torch.cos(a2)[:, None] * e1 + torch.sin(a2)[:, None] * ey)
    for r, (i, j, k, l) in enumerate(zmatrix[3:]):
        b, a, t = ic[:, 3 + 3 * r], ic[:, 4 + 3 * r], ic[:, 5 + 3 * r]
        pj, pk, pl = pos[j], pos[k], pos[l]
        e1 = _norm(pk - pj)
        u = (pl - pk) - ((pl - pk) * e1).sum(-1, keepdim=True) * e1
        e2 = _norm(u)
        e3 = torch.cross(e1, e2, dim=-1)
        d = torch.cos(a)[:, None] * e1 + torch.sin(a)[:, None] * (
            torch.cos(t)[:, None] * e2 - torch.sin(t)[:, None] * e3
        )
        pos[i] = pj + b[:, None] * d
    return torch.stack(pos, 1)


def cartesian_log_jacobian(ic: torch.Tensor, zmatrix: list[list[int]]) -> torch.Tensor:
    """log J [B] of x(translation, rotation, ic) (see the module docstring)."""
    bonds, angles, _ = _layout(zmatrix)
    b = ic[:, bonds].abs().clamp_min(1e-12)
    a = ic[:, angles]
    return 2 * torch.log(b).sum(-1) + torch.log(torch.sin(a).abs().clamp_min(1e-12)).sum(-1)


def _log_com(c: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """log N(c; 0, I/N) of centroids c [B, 3]."""
    s2 = 1.0 / n_atoms
    return -(c**2).sum(-1) / (2 * s2) - 1.5 * math.log(2 * math.pi * s2)


def rigid_log_prob(x: torch.Tensor, ic: torch.Tensor, zmatrix) -> torch.Tensor:
    """log q(x) - log q_ic(ic) [B]: centroid N(0, I/N), uniform rotation, minus log J (module docstring)."""
    return _log_com(x.mean(1), x.shape[1]) - LOG_8PI2 - cartesian_log_jacobian(ic, zmatrix)


def place_rigidly(y: torch.Tensor, ic: torch.Tensor, lq_ic: torch.Tensor, zmatrix, generator=None):
    """Canonical-frame conformations y [B, N, 3] (from `cartesian_from_ic`) -> (x, log q(x)): centred,
    uniformly rotated, centroid drawn from N(0, I/N)."""
    from scifm.prose.train import random_rotations

    b, n = y.shape[:2]
    y = y - y.mean(1, keepdim=True)
    R = random_rotations(b, y.dtype, generator).to(y.device)
    c = torch.randn(b, 1, 3, generator=generator, dtype=y.dtype).to(y.device) / math.sqrt(n)
    x = torch.einsum("bij,bnj->bni", R, y) + c
    return x, lq_ic + rigid_log_prob(x, ic, zmatrix)


# -------------------------------------------------------------------------- rational-quadratic spline
def rq_spline(
    x: torch.Tensor,
    w: torch.Tensor,
    h: torch.Tensor,
    d: torch.Tensor,
    bound: float,
    inverse: bool = False,
    min_bin: float = 1e-3,
    min_deriv: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotone rational-quadratic spline on [-bound, bound] (Durkan et al. 2019), elementwise.

    x [...]; unnormalised bin widths w and heights h [..., K] and knot derivatives d [..., K + 1]
    (d = 0 gives derivative 1, so all-zero parameters are the identity). Returns (y, log|dy/dx|) of the
    forward map, or of the inverse map with `inverse=True`. Inputs must lie in [-bound, bound].
    """
    K = w.shape[-1]
    widths = min_bin + (1 - min_bin * K) * torch.softmax(w, -1)
    heights = min_bin + (1 - min_bin * K) * torch.softmax(h, -1)
    derivs = min_deriv + (1 - min_deriv) * F.softplus(d) / math.log(2.0)
    cw = F.pad(torch.cumsum(widths, -1), (1, 0)) * 2 * bound - bound
    ch = F.pad(torch.cumsum(heights, -1), (1, 0)) * 2 * bound - bound
    cw[..., -1] = bound
    ch[..., -1] = bound
    knots = ch if inverse else cw
    idx = (torch.searchsorted(knots[..., 1:-1].contiguous(), x[..., None].contiguous(), right=True)).clamp(
        0, K - 1
    )
    xk = cw.gather(-1, idx)[..., 0]
    wk = (cw[..., 1:] - cw[..., :-1]).gather(-1, idx)[..., 0]
    yk = ch.gather(-1, idx)[..., 0]
    hk = (ch[..., 1:] - ch[..., :-1]).gather(-1, idx)[..., 0]
    dk = derivs.gather(-1, idx)[..., 0]
    dk1 = derivs[..., 1:].gather(-1, idx)[..., 0]
    s = hk / wk
    if inverse:
        dy = x - yk
        c2 = dk1 + dk - 2 * s
        a = hk * (s - dk) + dy * c2
        b = hk * dk - dy * c2
        c = -s * dy
        disc = (b * b - 4 * a * c).clamp_min(0)
        xi = (2 * c) / (-b - torch.sqrt(disc))
        out = xi * wk + xk
    else:
        xi = (x - xk) / wk
        c2 = dk1 + dk - 2 * s
        out = yk + hk * (s * xi**2 + dk * xi * (1 - xi)) / (s + c2 * xi * (1 - xi))
    om = xi * (1 - xi)
    denom = s + (dk1 + dk - 2 * s) * om
    dnum = s**2 * (dk1 * xi**2 + 2 * s * om + dk * (1 - xi) ** 2)
    logdet = torch.log(dnum) - 2 * torch.log(denom)
    return out, (-logdet if inverse else logdet)


def spline_with_tails(v, w, h, d, circular, tail_bound: float, inverse: bool = False):
    """`rq_spline` elementwise on v with two kinds of entries: circular ones (`circular` True, broadcast
    against v) on [-pi, pi], the others on [-tail_bound, tail_bound] with identity outside (derivative 1 at
    the ends, so d = 0 there). Returns (y, log|dy/dv|), zero log-det where the identity applies."""
    bound = torch.where(circular, math.pi, tail_bound).to(v.dtype)
    d = torch.where(circular[..., None], d, F.pad(d[..., 1:-1], (1, 1)))
    inside = circular | (v.abs() < bound)
    x = torch.where(inside, v, torch.zeros_like(v)) / bound
    y, ld = rq_spline(x.clamp(-1, 1), w, h, d, 1.0, inverse=inverse)
    return torch.where(inside, y * bound, v), torch.where(inside, ld, torch.zeros_like(ld))


# ---------------------------------------------------------------------------------------- the flow
@dataclass
class ICFlowConfig:
    zmatrix: list = field(default_factory=list)  # rows [i, j, k, l] (see build_zmatrix)
    ic_mean: list = field(default_factory=list)  # per ic dim (torsions: 0)
    ic_std: list = field(default_factory=list)  # per ic dim (torsions: 1)
    std_nm: float = 0.1  # Cartesian scale (nm per standardised unit), as in ProseConfig
    n_layers: int = 12
    hidden: int = 256
    n_bins: int = 8
    tail_bound: float = 5.0
    mask_seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ICFlowConfig:
        return strict_from_dict(cls, d, "icflow")


class _Coupling(nn.Module):
    def __init__(self, transform: torch.Tensor, is_torsion: torch.Tensor, hidden: int, n_bins: int, bound):
        super().__init__()
        self.register_buffer("tr", transform.nonzero()[:, 0])
        self.register_buffer("co", (~transform).nonzero()[:, 0])
        self.register_buffer("co_tors", is_torsion[self.co])
        self.register_buffer("tr_tors", is_torsion[self.tr])
        self.K = n_bins
        self.bound = float(bound)
        n_in = int(len(self.co) + self.co_tors.sum())  # torsions enter as (cos, sin)
        n_out = len(self.tr) * (3 * n_bins + 1)
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, n_out)
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _params(self, u: torch.Tensor):
        c = u[:, self.co]
        feats = torch.cat([torch.where(self.co_tors, torch.cos(c), c), torch.sin(c[:, self.co_tors])], -1)
        p = self.net(feats).view(u.shape[0], len(self.tr), 3 * self.K + 1)
        return p[..., : self.K], p[..., self.K : 2 * self.K], p[..., 2 * self.K :]

    def forward(self, u: torch.Tensor, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        w, h, d = self._params(u)
        # torsions on the circle, bonds/angles on [-B, B] with identity tails
        y, ld = spline_with_tails(u[:, self.tr], w, h, d, self.tr_tors, self.bound, inverse)
        out = u.clone()
        out[:, self.tr] = y
        return out, ld.sum(-1)


class ICFlow(nn.Module):
    """Neural-spline flow over the internal coordinates of one molecule (see the module docstring)."""

    def __init__(self, config: ICFlowConfig):
        super().__init__()
        self.config = config
        zm = config.zmatrix
        D = 3 * len(zm) - 6
        if len(config.ic_mean) != D or len(config.ic_std) != D:
            raise ConfigError(f"icflow: ic_mean/ic_std need {D} entries for {len(zm)} atoms")
        if config.n_layers < 2 or config.n_layers % 2:
            raise ConfigError(f"icflow: n_layers must be even and >= 2, got {config.n_layers}")
        _, _, tors = _layout(zm)
        is_t = torch.zeros(D, dtype=torch.bool)
        is_t[tors] = True
        self.register_buffer("is_torsion", is_t)
        self.register_buffer("mean", torch.tensor(config.ic_mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(config.ic_std, dtype=torch.float32))
        g = torch.Generator().manual_seed(config.mask_seed)
        layers = []
        for pair in range(config.n_layers // 2):
            if pair % 2 == 0:
                m = is_t.clone()  # torsions given bonds/angles, then the reverse
            else:
                m = torch.zeros(D, dtype=torch.bool)
                m[torch.randperm(D, generator=g)[: D // 2]] = True
            for mask in (m, ~m):
                layers.append(_Coupling(mask, is_t, config.hidden, config.n_bins, config.tail_bound))
        self.layers = nn.ModuleList(layers)
        self.n_atoms = len(zm)
        self.dim = D

    # ------------------------------------------------------------------ internal-coordinate density
    def _to_u(self, ic):
        u = torch.where(self.is_torsion, ic, (ic - self.mean) / self.std)
        return u, -torch.log(self.std[~self.is_torsion]).sum().expand(ic.shape[0])

    def _base_logp(self, z):
        t = self.is_torsion
        gauss = -0.5 * (z[:, ~t] ** 2).sum(-1) - 0.5 * math.log(2 * math.pi) * int((~t).sum())
        return gauss - math.log(2 * math.pi) * int(t.sum())

    def log_prob_ic(self, ic: torch.Tensor) -> torch.Tensor:
        """log q_ic(ic) [B] for ic [B, D]."""
        u, ld = self._to_u(ic)
        for layer in self.layers:
            u, l = layer(u)
            ld = ld + l
        return self._base_logp(u) + ld

    def sample_ic(self, n: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        dev, dt = self.mean.device, self.mean.dtype
        t = self.is_torsion.cpu()
        z = torch.randn(n, self.dim, generator=generator, dtype=dt)
        z[:, t] = (torch.rand(n, int(t.sum()), generator=generator, dtype=dt) * 2 - 1) * math.pi
        z = z.to(dev)
        lp = self._base_logp(z)
        u = z
        for layer in reversed(self.layers):
            u, l = layer(u, inverse=True)
            lp = lp - l
        ic = torch.where(self.is_torsion, u, u * self.std + self.mean)
        return ic, lp - torch.log(self.std[~self.is_torsion]).sum()

    # ------------------------------------------------------------ Cartesian interface (as ProseFlow)
    def log_prob(self, x: torch.Tensor, cond=None, perms=None, mask=None) -> torch.Tensor:
        """log q(x) [B] on standardised Cartesian coordinates x [B, N, 3] (rigid motions included)."""
        if x.shape[1] != self.n_atoms:
            raise DataError("icflow", f"expected {self.n_atoms} atoms, got {x.shape[1]}")
        x = x.to(self.mean.dtype)
        ic = ic_from_cartesian(x, self.config.zmatrix)
        return self.log_prob_ic(ic) + rigid_log_prob(x, ic, self.config.zmatrix)

    def sample(self, n: int, cond=None, perms=None, batch_size: int = 1024, generator=None, progress=None):
        """n samples (x [n, N, 3], log q(x) [n]) in standardised Cartesian units."""

        def draw(b: int):
            with torch.no_grad():
                ic, lq = self.sample_ic(b, generator)
            y = cartesian_from_ic(ic, self.config.zmatrix)
            return place_rigidly(y, ic, lq, self.config.zmatrix, generator)

        return sample_in_batches(n, batch_size, draw, progress)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def fit_statistics(x: torch.Tensor, zmatrix: list[list[int]]) -> tuple[list[float], list[float]]:
    """Mean and std per ic dim of frames x [F, N, 3] (torsions: 0 and 1)."""
    ic = ic_from_cartesian(x.double(), zmatrix)
    _, _, tors = _layout(zmatrix)
    mean, std = ic.mean(0), ic.std(0).clamp_min(1e-6)
    mean[tors], std[tors] = 0.0, 1.0
    return mean.tolist(), std.tolist()


def make_icflow(topology, frames_std: torch.Tensor, std_nm: float, **overrides) -> ICFlow:
    """An ICFlow for an OpenMM topology, with ic statistics from standardised frames [F, N, 3]."""
    atoms = list(topology.atoms())
    bonds = [(b[0].index, b[1].index) for b in topology.bonds()]
    elements = [a.element.symbol if a.element is not None else "X" for a in atoms]
    zm = build_zmatrix(len(atoms), bonds, elements)
    mean, std = fit_statistics(frames_std, zm)
    cfg = ICFlowConfig(zmatrix=zm, ic_mean=mean, ic_std=std, std_nm=float(std_nm))
    cfg = ICFlowConfig.from_dict({**cfg.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})
    return ICFlow(cfg)


from scifm.core.train import Task  # noqa: E402  (after the model: Task pulls in lightning)


class ICFlowTask(Task):
    """Maximum likelihood of the internal coordinates of training frames (NLL per ic dimension)."""

    def loss(self, batch, stage):
        x = batch["x"]
        ic = ic_from_cartesian(x.to(self.model.mean.dtype), self.model.config.zmatrix)
        lp = self.model.log_prob_ic(ic)
        loss = -lp.mean() / self.model.dim
        return loss, {"nll": (-lp).mean().detach()}
