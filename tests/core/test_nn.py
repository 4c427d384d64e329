"""Shared layers: radial bases, cutoffs, scatter, MLP and the e3nn equivariant blocks."""

from __future__ import annotations

import math

import pytest
import torch

from scifm.core.nn import (
    MLP,
    BesselBasis,
    CosineCutoff,
    GaussianBasis,
    PolynomialCutoff,
    scatter_mean,
    scatter_sum,
)

DT = torch.float64


# -- radial bases -------------------------------------------------------------------------------------
def test_bessel_matches_formula_and_vanishes_at_cutoff():
    c, n = 4.0, 6
    rbf = BesselBasis(c, n).to(DT)
    r = torch.tensor([0.7, 2.3], dtype=DT)
    expected = torch.stack(
        [math.sqrt(2 / c) * torch.sin(k * math.pi * r / c) / r for k in range(1, n + 1)], -1
    )
    torch.testing.assert_close(rbf(r), expected)
    near = rbf(torch.tensor([c - 1e-6, c], dtype=DT))
    assert near.abs().max() < 1e-5  # every sin(n pi r / c) has a node at r = c


def test_bessel_is_orthonormal_with_r2_weight():
    # int_0^c (sqrt(2/c) sin(n pi r/c)/r)(sqrt(2/c) sin(m pi r/c)/r) r^2 dr = delta_nm
    c = 3.0
    r = torch.linspace(1e-6, c, 20001, dtype=DT)
    b = BesselBasis(c, 5).to(DT)(r)
    gram = torch.trapezoid(b.unsqueeze(-1) * b.unsqueeze(-2) * (r**2)[:, None, None], r, dim=0)
    torch.testing.assert_close(gram, torch.eye(5, dtype=DT), atol=1e-6, rtol=0)


def test_bessel_trainable_flag():
    assert isinstance(BesselBasis(5.0, 8, trainable=True).freqs, torch.nn.Parameter)
    fixed = BesselBasis(5.0, 8)
    assert not any(True for _ in fixed.parameters()) and "freqs" in dict(fixed.named_buffers())


def test_gaussian_basis_peaks_at_centres():
    g = GaussianBasis(0.0, 5.0, 11).to(DT)
    centres = torch.linspace(0, 5, 11, dtype=DT)
    out = g(centres)
    torch.testing.assert_close(torch.diagonal(out), torch.ones(11, dtype=DT))
    # a neighbouring centre one width away: exp(-1/2)
    torch.testing.assert_close(out[3, 4], torch.tensor(math.exp(-0.5), dtype=DT))


# -- cutoffs ------------------------------------------------------------------------------------------
def _derivatives(f, r):
    r = r.clone().requires_grad_(True)
    y = f(r)
    (d1,) = torch.autograd.grad(y.sum(), r, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), r)
    return y.detach(), d1.detach(), d2


def test_cosine_cutoff_values_and_first_derivative():
    c = 5.0
    f = CosineCutoff(c)
    y, d1, _ = _derivatives(f, torch.tensor([0.0, c / 2, c - 1e-7, c + 0.3], dtype=DT))
    torch.testing.assert_close(y, torch.tensor([1.0, 0.5, 0.0, 0.0], dtype=DT), atol=1e-12, rtol=0)
    assert abs(d1[2]) < 1e-6 and d1[3] == 0
    assert d1[1] < 0


@pytest.mark.parametrize("p", [3, 6])
def test_polynomial_cutoff_is_c2_at_cutoff(p):
    c = 4.5
    f = PolynomialCutoff(c, p)
    r = torch.tensor([0.0, c - 1e-5, c, c + 1.0], dtype=DT)
    y, d1, d2 = _derivatives(f, r)
    assert y[0] == 1.0
    assert abs(y[1]) < 1e-10 and y[2] == 0 and y[3] == 0
    assert abs(d1[1]) < 1e-7 and abs(d2[1]) < 1e-3 and d2[3] == 0
    # monotone decreasing on [0, c]
    grid = torch.linspace(0, c, 400, dtype=DT)
    assert (torch.diff(f(grid)) <= 1e-15).all()


def test_polynomial_cutoff_known_value():
    # p = 6, x = 1/2: 1 - 28/64 + 48/128 - 21/256
    f = PolynomialCutoff(2.0, 6)
    torch.testing.assert_close(
        f(torch.tensor(1.0, dtype=DT)), torch.tensor(1 - 28 / 64 + 48 / 128 - 21 / 256, dtype=DT)
    )


# -- scatter ------------------------------------------------------------------------------------------
def test_scatter_sum_and_mean_match_loops():
    src = torch.randn(7, 3, dtype=DT, requires_grad=True)
    index = torch.tensor([2, 0, 2, 1, 0, 2, 1])
    out = scatter_sum(src, index, dim_size=5)  # segments 3 and 4 are empty
    ref = torch.stack([src[index == k].sum(0) for k in range(5)])
    torch.testing.assert_close(out, ref)
    mean = scatter_mean(src, index, dim_size=5)
    torch.testing.assert_close(mean[:3], torch.stack([src[index == k].mean(0) for k in range(3)]))
    assert (mean[3:] == 0).all()
    out.sum().backward()
    torch.testing.assert_close(src.grad, torch.ones_like(src))


def test_scatter_other_dim_and_bad_index():
    src = torch.randn(2, 4, dtype=DT)
    out = scatter_sum(src, torch.tensor([1, 1, 0, 2]), dim=1)
    torch.testing.assert_close(out[:, 1], src[:, 0] + src[:, 1])
    with pytest.raises(ValueError):
        scatter_sum(src, torch.tensor([0, 1]), dim=1)


def test_mlp_shapes_and_activation():
    m = MLP(4, 2, hidden=[8, 8], activation="tanh")
    assert m(torch.randn(5, 4)).shape == (5, 2)
    assert sum(isinstance(x, torch.nn.Tanh) for x in m) == 2
    assert isinstance(MLP(3, 3), torch.nn.Sequential) and len(MLP(3, 3)) == 1
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(3, 3, hidden=[4], activation="nope")


# -- e3nn blocks --------------------------------------------------------------------------------------
e3nn = pytest.importorskip("e3nn")
from e3nn import o3  # noqa: E402

from scifm.core.nn import (  # noqa: E402
    ConvGateBlock,
    GateNonlinearity,
    SphericalHarmonicEdgeAttrs,
    TensorProductConv,
)


@pytest.fixture(autouse=False)
def float64_default():
    # e3nn builds Wigner matrices and its constants in the default dtype: float32 would cap precision at 1e-7
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _rotation(inversion: bool) -> torch.Tensor:
    R = o3.rand_matrix(dtype=DT)
    return -R if inversion else R


def _graph(n=6, e=14):
    g = torch.Generator().manual_seed(1)
    edge_index = torch.randint(0, n, (2, e), generator=g)
    vec = torch.randn(e, 3, generator=g, dtype=DT)
    return edge_index, vec


def test_spherical_harmonics_equivariant(float64_default):
    sh = SphericalHarmonicEdgeAttrs(3)
    assert sh.irreps_out == o3.Irreps("1x0e+1x1o+1x2e+1x3o")
    vec = torch.randn(10, 3, dtype=DT)
    for inversion in (False, True):
        R = _rotation(inversion)
        D = sh.irreps_out.D_from_matrix(R)
        torch.testing.assert_close(sh(vec @ R.T), sh(vec) @ D.T)
    # normalised: independent of |r|
    torch.testing.assert_close(sh(3.0 * vec), sh(vec))


@pytest.mark.parametrize("inversion", [False, True])
def test_tensor_product_conv_equivariant(inversion, float64_default):
    torch.manual_seed(0)
    irreps_in, irreps_out = o3.Irreps("4x0e+2x1o"), o3.Irreps("3x0e+2x1o+1x2e+1x1e")
    sh = SphericalHarmonicEdgeAttrs(2)
    conv = TensorProductConv(
        irreps_in,
        sh.irreps_out,
        irreps_out,
        n_scalars=5,
        radial_hidden=(8,),
        avg_num_neighbors=3.0,
        irreps_node_attr="3x0e",
    ).to(DT)
    edge_index, vec = _graph()
    x = irreps_in.randn(6, -1, dtype=DT)
    attr = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).to(DT)
    scal = torch.randn(vec.shape[0], 5, dtype=DT)
    R = _rotation(inversion)
    out = conv(x, sh(vec), scal, edge_index, attr)
    out_rot = conv(x @ irreps_in.D_from_matrix(R).T, sh(vec @ R.T), scal, edge_index, attr)
    torch.testing.assert_close(out_rot, out @ irreps_out.D_from_matrix(R).T)
    assert out.abs().max() > 1e-3  # not trivially zero


def test_conv_messages_vanish_with_edge_scalars():
    # the radial MLP has no biases: zero edge scalars (r at the cutoff) -> no message, only self-connection
    irreps = o3.Irreps("2x0e+1x1o")
    sh = SphericalHarmonicEdgeAttrs(1)
    conv = TensorProductConv(irreps, sh.irreps_out, irreps, n_scalars=4).to(DT)
    edge_index, vec = _graph()
    x = irreps.randn(6, -1, dtype=DT)
    out = conv(x, sh(vec), torch.zeros(vec.shape[0], 4, dtype=DT), edge_index)
    torch.testing.assert_close(out, conv.self_connection(x))


def test_gate_and_block_equivariant(float64_default):
    torch.manual_seed(0)
    gate = GateNonlinearity("4x0e+1x0o+2x1o+1x2e")
    assert gate.irreps_out == o3.Irreps("4x0e+1x0o+2x1o+1x2e")
    assert gate.irreps_in.dim == gate.irreps_out.dim + 3  # one gate scalar per gated irrep
    irreps = o3.Irreps("4x0e+2x1o")
    sh = SphericalHarmonicEdgeAttrs(2)
    block = ConvGateBlock(irreps, sh.irreps_out, irreps, n_scalars=4, radial_hidden=(8,)).to(DT)
    assert block.resnet
    edge_index, vec = _graph()
    x = irreps.randn(6, -1, dtype=DT)
    scal = torch.randn(vec.shape[0], 4, dtype=DT)
    for inversion in (False, True):
        R = _rotation(inversion)
        D = irreps.D_from_matrix(R)
        torch.testing.assert_close(
            block(x @ D.T, sh(vec @ R.T), scal, edge_index), block(x, sh(vec), scal, edge_index) @ D.T
        )
    y = gate.irreps_in.randn(5, -1, dtype=DT)
    R = _rotation(True)
    torch.testing.assert_close(
        gate(y @ gate.irreps_in.D_from_matrix(R).T), gate(y) @ gate.irreps_out.D_from_matrix(R).T
    )
