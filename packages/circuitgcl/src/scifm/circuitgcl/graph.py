"""Circuit graphs: a flattened netlist -> one homogeneous graph of net, device and pin nodes.

Layout (the anchor's CircuitGCL convention, section 1.2): node types NET=0, DEV=1, PIN=2; message-passing
edges device-pin (type 0) and pin-net (type 1), stored in both directions; target pairs (never used for
message passing) pin-net (2), pin-pin (3), net-net (4) carrying the coupling capacitance in farads; the
ground capacitance of every net (farads) is the node target. Supply and ground rails are not graph nodes
(CircuitGCL removes VDD/VSS): capacitance to any rail counts as ground capacitance, and a pin wired to a
rail keeps a ``rail`` flag instead of an edge. Parasitic C (and R) lines are labels only; features come
from devices and connectivity.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace

import torch

from .spice import FlatNetlist

NET, DEV, PIN = 0, 1, 2
E_DEV_PIN, E_PIN_NET, CC_P2N, CC_P2P, CC_N2N = 0, 1, 2, 3, 4
N_FEAT = 17  # features per node row (per-type columns, right-padded with zeros)
# pin type codes: transistor drain/gate/source as in CircuitGCL's file (1 = gate), then other devices
PIN_D, PIN_G, PIN_S, PIN_RES, PIN_CAP, PIN_DIODE, PIN_BJT, PIN_OTHER = range(8)
N_PIN_TYPES = 8
DEVICE_ONEHOT = ("nfet", "pfet", "res", "cap", "diode", "bjt", "other")

NET_COLUMNS = (
    "n_transistors",
    "n_gate",
    "n_source_drain",
    "n_bulk",
    "sum_w",
    "sum_l",
    "n_res_pins",
    "res_sum_w",
    "res_sum_l",
    "n_cap_pins",
    "cap_sum_w",
    "cap_sum_l",
    "n_diode_bjt_pins",
    "sum_diff_area",
    "sum_diff_perim",
    "is_port",
    "n_devices",
)
DEVICE_COLUMNS = (
    *(f"is_{k}" for k in DEVICE_ONEHOT),
    "w",
    "l",
    "mult",
    "diff_area",
    "diff_perim",
    "n_terminals",
    "n_distinct_nets",
    "is_dummy",
    "n_rail_terminals",
)

LOG_DECADES = 6.0
CLASS_BOUNDARIES = (0.2, 0.4, 0.6, 0.8)


@dataclass(frozen=True)
class LabelSpec:
    """Log-scale label window: y = clip(log10(C * 10**offset) / 6, 0, 1), 5 equal bins on [0, 1].

    ANCHOR is CircuitGCL's (28 nm SRAM): edge 1e-21..1e-15 F, node 1e-20..1e-14 F. Magic-extracted sky130
    analog nets are ~100x larger (median Cg ~2e-15 F, Cc ~3e-16 F), which would put almost every sky130 net
    in the top class; SKY130 shifts both windows by two decades and keeps the form and the binning.
    Coupling pairs outside the edge window (exclusive) are dropped as targets, as CircuitGCL does.
    """

    edge_offset: float = 21.0
    node_offset: float = 20.0

    @property
    def cc_range(self) -> tuple[float, float]:
        return (10.0**-self.edge_offset, 10.0 ** (LOG_DECADES - self.edge_offset))


ANCHOR = LabelSpec(21.0, 20.0)
SKY130 = LabelSpec(19.0, 18.0)

# rails, matched on the last hierarchy segment of a net name (case already lowered)
GROUND_RE = re.compile(r"^(0|gnd!?|vgnd\w*|vsubs?|sub|substrate|vnb|v?ss|[ad]?vss\w*|[ad]?gnd\w*)$")
_TERMINAL_SUBNODE = re.compile(r"\.t\d+$")
SUPPLY_RE = re.compile(r"^(vdd!?|vpwr|vdpwr|vpb|vcc\w*|vee|[ad]?vdd\w*|vdde)$")


@dataclass
class CircuitGraph:
    """One design as tensors. N nodes, E directed message-passing edges, M target pairs.

    node_type [N] long; x [N, 17] float32 raw features (see NET_COLUMNS / DEVICE_COLUMNS; pins: none);
    pin_type [N] long (pins only); rail [N] long (1 if a pin is wired to a supply/ground rail);
    edge_index [2, E] long, edge_type [E] long (both directions stored);
    cc_index [2, M] long, cc_type [M] long (2 p2n, 3 p2p, 4 n2n), cc_value [M] float64 farads;
    cg_value [N] float64 farads (ground capacitance), cg_mask [N] bool (which nodes carry a node label).
    """

    name: str
    node_type: torch.Tensor
    x: torch.Tensor
    pin_type: torch.Tensor
    rail: torch.Tensor
    edge_index: torch.Tensor
    edge_type: torch.Tensor
    cc_index: torch.Tensor
    cc_type: torch.Tensor
    cc_value: torch.Tensor
    cg_value: torch.Tensor
    cg_mask: torch.Tensor
    labels: LabelSpec = ANCHOR
    meta: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return int(self.node_type.numel())

    def counts(self) -> dict[str, int]:
        nt, et, ct = self.node_type, self.edge_type, self.cc_type
        return {
            "net": int((nt == NET).sum()),
            "device": int((nt == DEV).sum()),
            "pin": int((nt == PIN).sum()),
            "device_pin": int((et == E_DEV_PIN).sum()) // 2,
            "pin_net": int((et == E_PIN_NET).sum()) // 2,
            "cc_p2n": int((ct == CC_P2N).sum()),
            "cc_p2p": int((ct == CC_P2P).sum()),
            "cc_n2n": int((ct == CC_N2N).sum()),
            "nodes": self.num_nodes,
            "edges": int(et.numel()),
        }

    def edge_label(self) -> torch.Tensor:
        """[M] float32 normalised log coupling capacitance in [0, 1]."""
        return log_label(self.cc_value, self.labels.edge_offset)

    def node_label(self) -> torch.Tensor:
        """[N] float32 normalised log ground capacitance in [0, 1] (meaningful where cg_mask)."""
        return log_label(self.cg_value, self.labels.node_offset)

    def restrict_cc(self, min_farads: float) -> CircuitGraph:
        """A copy whose coupling targets are only the pairs with Cc >= ``min_farads`` (a common floor).

        Magic's ``ext2spice`` drops couplings below its ``cthresh``, and the sky130 netlists were extracted
        with different thresholds (smallest Cc 1e-16 F in seven files, 1e-17 F in four, 1e-19 F in
        ``tt09-analogmux``): whether a 0.05 fF pair exists is a property of the extraction run, not of the
        circuit. Applying the largest threshold to every design makes the target set mean the same thing.
        """
        keep = self.cc_value >= min_farads
        meta = {**self.meta, "cc_floor_farads": min_farads, "pairs_below_cc_floor": int((~keep).sum())}
        return replace(
            self,
            cc_index=self.cc_index[:, keep],
            cc_type=self.cc_type[keep],
            cc_value=self.cc_value[keep],
            meta=meta,
        )

    def to_pyg(self):
        """A ``torch_geometric.data.Data`` with the same tensors (y = node class, edge_label = edge value)."""
        from torch_geometric.data import Data

        return Data(
            x=self.x,
            node_type=self.node_type,
            pin_type=self.pin_type,
            rail=self.rail,
            edge_index=self.edge_index,
            edge_type=self.edge_type,
            edge_label_index=self.cc_index,
            edge_label=self.edge_label(),
            cc_type=self.cc_type,
            y=to_class(self.node_label()),
            node_label=self.node_label(),
            node_mask=self.cg_mask,
            num_nodes=self.num_nodes,
        )


def log_label(farads: torch.Tensor, offset: float) -> torch.Tensor:
    """clip(log10(C * 10**offset) / 6, 0, 1); C <= 0 maps to 0. Computed in float64."""
    c = farads.to(torch.float64)
    with torch.no_grad():
        y = torch.where(c > 0, torch.log10(c.clamp_min(1e-300)) + offset, torch.full_like(c, -math.inf))
    return (y / LOG_DECADES).clamp(0.0, 1.0).to(torch.float32)


def to_class(y: torch.Tensor) -> torch.Tensor:
    """5 classes, right-closed bins (b[i-1] < y <= b[i]) as torch.bucketize, in float32 like CircuitGCL."""
    return torch.bucketize(y.to(torch.float32), torch.tensor(CLASS_BOUNDARIES, dtype=torch.float32))


def rail_kind(net: str, supply: set[str] | None = None, ground: set[str] | None = None) -> str | None:
    """'ground', 'supply' or None for a (lower-case, hierarchical) net name."""
    if ground and net in ground:
        return "ground"
    if supply and net in supply:
        return "supply"
    leaf = re.split(r"[/]", net)[-1]
    leaf = leaf.split(".")[-1] if "." in leaf else leaf
    if GROUND_RE.match(leaf):
        return "ground"
    if SUPPLY_RE.match(leaf):
        return "supply"
    return None


def _to_um(v: float) -> float:
    # PDK netlists give W/L in microns without suffix; generic SPICE gives metres (1u -> 1e-6)
    return v * 1e6 if 0 < abs(v) < 1e-3 else v


def _pins_of(kind: str, n_term: int) -> list[tuple[int, int]]:
    """(terminal index, pin type) for terminals that become pin nodes; the others (bulk/body) do not."""
    if kind in ("nfet", "pfet"):
        return [(0, PIN_D), (1, PIN_G), (2, PIN_S)][:n_term]
    if kind == "res":
        return [(i, PIN_RES) for i in range(min(2, n_term))]
    if kind == "cap":
        return [(i, PIN_CAP) for i in range(min(2, n_term))]
    if kind == "diode":
        return [(i, PIN_DIODE) for i in range(min(2, n_term))]
    if kind == "bjt":
        return [(i, PIN_BJT) for i in range(min(3, n_term))]
    return [(i, PIN_OTHER) for i in range(n_term)]


def build_graph(
    flat: FlatNetlist,
    name: str | None = None,
    supply: set[str] | None = None,
    ground: set[str] | None = None,
    labels: LabelSpec = SKY130,
    pin_labels: bool = True,
) -> CircuitGraph:
    """Graph of a flattened netlist (see module docstring). ``supply``/``ground`` force rail names.

    Nets that no parasitic C line touches at all carry no node label (``cg_mask`` False): extraction
    reported nothing for them (e.g. the RC-only meshes of ``lsxo``), which is unknown, not 0 F.
    """
    cc_range = labels.cc_range
    net_of = flat.net
    nets_all = set(flat.net_of.values())
    rails = {n: k for n in nets_all if (k := rail_kind(n, supply, ground)) is not None}

    # -- nodes: nets touching a device pin (or ports), devices, pins
    devs = flat.devices
    pin_rows: list[tuple[int, int, int, str]] = []  # (device idx, terminal idx, pin type, raw node)
    signal_nets: dict[str, int] = {}
    for p in flat.ports:
        n = net_of(p)
        if n not in rails:
            signal_nets.setdefault(n, len(signal_nets))
    for di, d in enumerate(devs):
        for ti, pt in _pins_of(d.kind, len(d.terminals)):
            pin_rows.append((di, ti, pt, d.terminals[ti]))
        for t in d.terminals:
            n = net_of(t)
            if n not in rails:
                signal_nets.setdefault(n, len(signal_nets))
    n_net, n_dev, n_pin = len(signal_nets), len(devs), len(pin_rows)
    N = n_net + n_dev + n_pin
    node_type = torch.cat([torch.full((n_net,), NET), torch.full((n_dev,), DEV), torch.full((n_pin,), PIN)])
    x = torch.zeros(N, N_FEAT, dtype=torch.float64)
    pin_type = torch.zeros(N, dtype=torch.long)
    rail = torch.zeros(N, dtype=torch.long)
    port_set = {net_of(p) for p in flat.ports}
    for n, i in signal_nets.items():
        x[i, 15] = float(n in port_set)

    # -- device features and net statistics
    net_devices: dict[int, set[int]] = defaultdict(set)
    for di, d in enumerate(devs):
        row = n_net + di
        p = d.params
        w = _to_um(p.get("w", 0.0))
        l = _to_um(p.get("l", 0.0))
        mult = p.get("m", 1.0) * p.get("nf", 1.0) * p.get("mult", 1.0)
        area = p.get("ad", 0.0) + p.get("as", 0.0)
        perim = p.get("pd", 0.0) + p.get("ps", 0.0)
        nets = [net_of(t) for t in d.terminals]
        x[row, DEVICE_ONEHOT.index(d.kind)] = 1.0
        x[row, 7:16] = torch.tensor(
            [
                w,
                l,
                mult,
                area,
                perim,
                len(nets),
                len(set(nets)),
                float(d.kind in ("nfet", "pfet") and len(set(nets[:3])) == 1),
                sum(n in rails for n in nets),
            ],
            dtype=torch.float64,
        )
        for ti, t in enumerate(nets):
            if t in rails:
                continue
            ni = signal_nets[t]
            net_devices[ni].add(di)
            if d.kind in ("nfet", "pfet"):
                if ti == 1:
                    x[ni, 1] += 1
                elif ti in (0, 2):
                    x[ni, 2] += 1
                    x[ni, 13] += p.get("ad" if ti == 0 else "as", 0.0)
                    x[ni, 14] += p.get("pd" if ti == 0 else "ps", 0.0)
                else:
                    x[ni, 3] += 1
                x[ni, 4] += w * mult
                x[ni, 5] += l
            elif d.kind == "res":
                x[ni, 6] += 1
                x[ni, 7] += w
                x[ni, 8] += l
            elif d.kind == "cap":
                x[ni, 9] += 1
                x[ni, 10] += w
                x[ni, 11] += l
            else:
                x[ni, 12] += 1
    for ni, ds in net_devices.items():
        x[ni, 0] = sum(devs[di].kind in ("nfet", "pfet") for di in ds)
        x[ni, 16] = len(ds)

    # -- pins and message-passing edges
    src, dst, etype = [], [], []
    raw_to_pins: dict[str, list[int]] = defaultdict(list)
    for k, (di, _ti, pt, raw) in enumerate(pin_rows):
        row = n_net + n_dev + k
        pin_type[row] = pt
        src.append(n_net + di)
        dst.append(row)
        etype.append(E_DEV_PIN)
        n = net_of(raw)
        if n in rails:
            rail[row] = 1
        else:
            src.append(row)
            dst.append(signal_nets[n])
            etype.append(E_PIN_NET)
        if raw != n and _TERMINAL_SUBNODE.search(raw):  # RC-mesh terminal node: pin-level C possible
            raw_to_pins[raw].append(row)
    ei = torch.tensor([src, dst], dtype=torch.long).reshape(2, -1)
    et = torch.tensor(etype, dtype=torch.long)
    edge_index = torch.cat([ei, ei.flip(0)], dim=1)
    edge_type = torch.cat([et, et])

    # -- labels from parasitic C
    cg = torch.zeros(N, dtype=torch.float64)
    has_c = torch.zeros(N, dtype=torch.bool)
    pair_c: dict[tuple[int, int], float] = defaultdict(float)
    n_self = n_unplaced = 0

    def endpoint(raw: str, net: str) -> int | None:
        if pin_labels:
            rows = raw_to_pins.get(raw)
            if rows is not None and len(rows) == 1:
                return rows[0]
        return signal_nets.get(net)

    for _, a, b, value in flat.caps:
        na, nb = net_of(a), net_of(b)
        if na == nb:
            n_self += 1
            continue
        ra, rb = na in rails, nb in rails
        if ra and rb:
            continue
        if ra or rb:
            raw, net = (b, nb) if ra else (a, na)
            i = signal_nets.get(net)
            if i is None:
                n_unplaced += 1
                continue
            cg[i] += value
            has_c[i] = True
            j = endpoint(raw, net)
            if j is not None and j != i:
                cg[j] += value  # pin ground capacitance (pins of RC meshes only)
            continue
        i, j = endpoint(a, na), endpoint(b, nb)
        if i is None or j is None:
            n_unplaced += 1
            continue
        pair_c[(min(i, j), max(i, j))] += value
        has_c[signal_nets[na]] = has_c[signal_nets[nb]] = True
    pairs = [(i, j, v) for (i, j), v in pair_c.items() if cc_range[0] < v < cc_range[1]]
    if pairs:
        cc_index = torch.tensor([[p[0] for p in pairs], [p[1] for p in pairs]], dtype=torch.long)
        cc_value = torch.tensor([p[2] for p in pairs], dtype=torch.float64)
    else:
        cc_index, cc_value = torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.float64)
    cc_type = _pair_type(node_type, cc_index)
    # pins first (p2n: pin row as source), as the CircuitGCL file stores (pin, cc_p2n, net)
    swap = (node_type[cc_index[0]] == NET) & (node_type[cc_index[1]] == PIN)
    cc_index[:, swap] = cc_index.flip(0)[:, swap]
    cg_mask = (node_type == NET) & has_c
    meta = {
        "source": flat.path,
        "top": flat.top,
        "rails": sorted(rails),
        "self_loop_caps": n_self,
        "caps_off_graph": n_unplaced,
        "pairs_outside_cc_range": len(pair_c) - len(pairs),
        "net_names": list(signal_nets),
    }
    return CircuitGraph(
        name or flat.top,
        node_type,
        x.float(),
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


PAIR_FEATURES = ("log1p_shared_devices", "shares_device")


def pair_features(g: CircuitGraph, pairs: torch.Tensor) -> torch.Tensor:
    """[M, 2] symmetric descriptors of target pairs ``pairs`` [2, M] (see PAIR_FEATURES).

    The devices of a net are those with a pin on it; the device of a pin is its own. Two nets wired to the
    same transistor sit next to each other in the layout, which is the most design-independent predictor
    of their coupling found in the sky130 data (Pearson r 0.1-0.67 in every design). Topology only: no
    parasitic value enters.
    """
    ei, et, nt = g.edge_index, g.edge_type, g.node_type
    dev_of_pin = torch.full((g.num_nodes,), -1, dtype=torch.long)
    m = (et == E_DEV_PIN) & (nt[ei[0]] == DEV)
    dev_of_pin[ei[1, m]] = ei[0, m]
    devs: dict[int, set[int]] = defaultdict(set)
    m = (et == E_PIN_NET) & (nt[ei[0]] == PIN)
    for pin, net in zip(ei[0, m].tolist(), ei[1, m].tolist(), strict=True):
        devs[net].add(int(dev_of_pin[pin]))
    for pin in (nt == PIN).nonzero().flatten().tolist():
        devs[pin].add(int(dev_of_pin[pin]))
    shared = torch.tensor(
        [len(devs.get(a, set()) & devs.get(b, set())) for a, b in pairs.t().tolist()], dtype=torch.float32
    )
    return torch.stack([torch.log1p(shared), (shared > 0).float()], dim=1).reshape(-1, len(PAIR_FEATURES))


def _pair_type(node_type: torch.Tensor, cc_index: torch.Tensor) -> torch.Tensor:
    ta, tb = node_type[cc_index[0]], node_type[cc_index[1]]
    n_pins = (ta == PIN).long() + (tb == PIN).long()
    return torch.where(n_pins == 2, CC_P2P, torch.where(n_pins == 1, CC_P2N, CC_N2N)).long()


class FeatureScaler:
    """log1p of |features|, then divided by the per-type column maximum of the TRAINING graphs.

    CircuitGCL divides by the maximum over all designs including test ones; fitting on training graphs
    only keeps held-out designs unseen. ``state()``/``from_state`` round-trip through JSON.
    """

    def __init__(self, scale: torch.Tensor | None = None):
        self.scale = scale  # [3, N_FEAT]

    def fit(self, graphs: list[CircuitGraph]) -> FeatureScaler:
        scale = torch.zeros(3, N_FEAT)
        for g in graphs:
            z = torch.log1p(g.x.abs())
            for t in (NET, DEV):
                rows = z[g.node_type == t]
                if len(rows):
                    scale[t] = torch.maximum(scale[t], rows.max(0).values)
        self.scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return self

    def transform(self, g: CircuitGraph) -> torch.Tensor:
        z = torch.log1p(g.x.abs()) * torch.sign(g.x)
        return z / self.scale[g.node_type]

    def state(self) -> list[list[float]]:
        return self.scale.tolist()

    @classmethod
    def from_state(cls, s: list[list[float]]) -> FeatureScaler:
        return cls(torch.tensor(s, dtype=torch.float32))
