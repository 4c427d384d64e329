"""Readers for the CircuitGCL / CirGPS graph files (``digtime.pt`` and its pickle-free ``digtime.npz``)
and for SPICE netlists, all returning ``CircuitGraph``.

The ``.pt`` file is a torch zip pickle of ``[HeteroData]``; it is opened with ``torch.load(weights_only=
True)`` plus an allow-list of the PyG storage classes it names (``scifm.core.io.load_checkpoint``), so no
other global can run. The transformation follows the anchor (section 1.2): supply nets 0 and 1 are removed,
device-net edges dropped, coupling targets kept for 1e-21 F < Cc < 1e-15 F, node labels on nets.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import torch

from scifm.core.errors import DataError

from .graph import (
    ANCHOR,
    CC_N2N,
    CC_P2N,
    CC_P2P,
    DEV,
    E_DEV_PIN,
    E_PIN_NET,
    N_FEAT,
    NET,
    PIN,
    SKY130,
    CircuitGraph,
    LabelSpec,
    build_graph,
)
from .spice import read_flat

DIGTIME_SUPPLY_NETS = (0, 1)  # VDD / VSS of DIGITAL_CLK_GEN (degrees 3346 and 3281), removed by CircuitGCL
_REQUIRED = (
    "node__net__x",
    "node__net__y",
    "node__device__x",
    "node__pin__x",
    "node__pin__y",
    "edge__device__device-pin__pin__edge_index",
    "edge__pin__pin-net__net__edge_index",
    "edge__pin__cc_p2n__net__edge_index",
    "edge__pin__cc_p2n__net__y",
    "edge__pin__cc_p2p__pin__edge_index",
    "edge__pin__cc_p2p__pin__y",
    "edge__net__cc_n2n__net__edge_index",
    "edge__net__cc_n2n__net__y",
)


def _pt_arrays(path: Path) -> dict[str, np.ndarray]:
    from torch_geometric.data.feature_store import TensorAttr
    from torch_geometric.data.graph_store import EdgeAttr
    from torch_geometric.data.hetero_data import HeteroData
    from torch_geometric.data.storage import BaseStorage, EdgeStorage, NodeStorage

    from scifm.core.io import load_checkpoint

    obj = load_checkpoint(
        path,
        safe_globals=[
            HeteroData,
            BaseStorage,
            NodeStorage,
            EdgeStorage,
            EdgeAttr,
            TensorAttr,
            collections.OrderedDict,
        ],
    )
    data = obj[0] if isinstance(obj, list | tuple) and obj else obj
    if not isinstance(data, HeteroData):
        raise DataError(path, f"expected a list holding one HeteroData, found {type(data).__name__}")
    out: dict[str, np.ndarray] = {}
    for t in data.node_types:
        for k, v in data[t].items():
            out[f"node__{t}__{k}"] = v.numpy()
    for s, r, d in data.edge_types:
        for k, v in data[s, r, d].items():
            out[f"edge__{s}__{r}__{d}__{k}"] = v.numpy()
    return out


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The raw arrays of a CircuitGCL graph file (``.npz`` or ``.pt``) keyed as in ``digtime.npz``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError) as exc:
            raise DataError(path, f"not a readable .npz archive ({exc})") from None
    elif path.suffix == ".pt":
        arrays = _pt_arrays(path)
    else:
        raise DataError(path, "unknown graph file type (expected .npz or .pt)")
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise DataError(path, f"missing arrays: {', '.join(missing)}")
    return arrays


def load_circuitgcl(
    path: str | Path, supply_nets: tuple[int, ...] = DIGTIME_SUPPLY_NETS, labels: LabelSpec = ANCHOR
) -> CircuitGraph:
    """A CircuitGCL/CirGPS HeteroData file as a homogeneous ``CircuitGraph`` (anchor section 1.2)."""
    path = Path(path)
    a = load_arrays(path)
    net_x, dev_x, pin_x = a["node__net__x"], a["node__device__x"], a["node__pin__x"].reshape(-1)
    n_net_all, n_dev, n_pin = len(net_x), len(dev_x), len(pin_x)
    for key, arr in a.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise DataError(path, "non-finite values", record=key)
    keep = np.ones(n_net_all, dtype=bool)
    keep[list(supply_nets)] = False
    new_net = np.full(n_net_all, -1, dtype=np.int64)
    new_net[keep] = np.arange(keep.sum())
    n_net = int(keep.sum())
    off_dev, off_pin = n_net, n_net + n_dev

    def net_rows(idx: np.ndarray) -> np.ndarray:
        return new_net[idx]

    N = n_net + n_dev + n_pin
    node_type = torch.cat([torch.full((n_net,), NET), torch.full((n_dev,), DEV), torch.full((n_pin,), PIN)])
    x = torch.zeros(N, N_FEAT)
    x[:n_net, : net_x.shape[1]] = torch.from_numpy(net_x[keep]).float()
    x[off_dev:off_pin, : dev_x.shape[1]] = torch.from_numpy(dev_x).float()
    pin_type = torch.zeros(N, dtype=torch.long)
    pin_type[off_pin:] = torch.from_numpy(pin_x.astype(np.int64))
    rail = torch.zeros(N, dtype=torch.long)

    dp = a["edge__device__device-pin__pin__edge_index"]
    pn = a["edge__pin__pin-net__net__edge_index"]
    on_rail = ~keep[pn[1]]
    rail[torch.from_numpy(pn[0][on_rail] + off_pin)] = 1
    pn = pn[:, ~on_rail]
    src = np.concatenate([dp[0] + off_dev, pn[0] + off_pin])
    dst = np.concatenate([dp[1] + off_pin, net_rows(pn[1])])
    et = np.concatenate([np.full(dp.shape[1], E_DEV_PIN), np.full(pn.shape[1], E_PIN_NET)])
    ei = torch.from_numpy(np.stack([src, dst])).long()
    edge_index = torch.cat([ei, ei.flip(0)], 1)
    edge_type = torch.from_numpy(np.concatenate([et, et])).long()

    lo, hi = labels.cc_range
    parts = []
    for key, kind, s_off, d_off in (
        ("edge__pin__cc_p2n__net", CC_P2N, "pin", "net"),
        ("edge__pin__cc_p2p__pin", CC_P2P, "pin", "pin"),
        ("edge__net__cc_n2n__net", CC_N2N, "net", "net"),
    ):
        idx, y = a[key + "__edge_index"], a[key + "__y"].astype(np.float64).reshape(-1)
        ok = (y > lo) & (y < hi)
        for side, t in ((0, s_off), (1, d_off)):
            if t == "net":
                ok &= keep[idx[side]]
        idx, y = idx[:, ok], y[ok]
        s = net_rows(idx[0]) if s_off == "net" else idx[0] + off_pin
        d = net_rows(idx[1]) if d_off == "net" else idx[1] + off_pin
        parts.append((np.stack([s, d]), np.full(len(y), kind), y))
    cc_index = torch.from_numpy(np.concatenate([p[0] for p in parts], 1)).long()
    cc_type = torch.from_numpy(np.concatenate([p[1] for p in parts])).long()
    cc_value = torch.from_numpy(np.concatenate([p[2] for p in parts]))
    cg = torch.zeros(N, dtype=torch.float64)
    cg[:n_net] = torch.from_numpy(a["node__net__y"].reshape(-1)[keep].astype(np.float64))
    cg[off_pin:] = torch.from_numpy(a["node__pin__y"].reshape(-1).astype(np.float64))
    cg_mask = node_type == NET
    meta = {
        "source": str(path),
        "removed_supply_nets": list(supply_nets),
        "feature_layout": "circuitgcl-17/16/1",
    }
    return CircuitGraph(
        path.stem,
        node_type,
        x,
        pin_type,
        rail,
        edge_index,
        edge_type,
        cc_index,
        cc_type,
        cc_value,
        cg,
        cg_mask,
        labels,
        meta,
    )


def load_netlist_graph(
    path: str | Path,
    labels: LabelSpec = SKY130,
    top: str | None = None,
    supply: set[str] | None = None,
    ground: set[str] | None = None,
) -> CircuitGraph:
    """Parse, flatten and convert one SPICE netlist; the graph is named after the file stem."""
    path = Path(path)
    g = build_graph(
        read_flat(path, top=top), name=path.stem.split("--")[0], supply=supply, ground=ground, labels=labels
    )
    return g


def load_any(path: str | Path, labels: LabelSpec | None = None) -> CircuitGraph:
    """``.npz``/``.pt`` -> CircuitGCL graph (ANCHOR labels); anything else is read as a SPICE netlist."""
    path = Path(path)
    if path.suffix in (".npz", ".pt"):
        return load_circuitgcl(path, labels=labels or ANCHOR)
    return load_netlist_graph(path, labels=labels or SKY130)
