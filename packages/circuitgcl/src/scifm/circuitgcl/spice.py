"""SPICE netlist reader and flattener (ngspice / HSPICE / Magic ``ext2spice`` dialects).

``parse_netlist(path)`` reads the file into sub-circuits and top-level elements; ``flatten(netlist)`` expands
the hierarchy into leaf devices (transistors, resistors, capacitors, diodes, BJTs), parasitic capacitors
and parasitic resistors whose nodes carry full hierarchical names. All names are lower-cased (SPICE is
case-insensitive). Problems raise ``DataError(file, problem, record="line N")`` before any work is done.

Conventions read from Magic output (see ``shared/data/circuits/sky130/SOURCE.md``):

- ``+`` continues the previous statement; ``*`` lines (including ``*+`` and ``**devattr``) are comments
  and never continue anything; `` $ `` and ``;`` start in-line comments.
- An ``X`` line's last positional token is the sub-circuit or model name; ``key=value`` tokens are
  parameters. A name that is not a ``.subckt`` but looks like a device model (``nfet``, ``res``, ``cap``,
  ``diode``, ``pnp`` ...) is a leaf device, e.g. ``sky130_fd_pr__nfet_01v8``; anything else is an error.
- ``R``/``C`` lines with a numeric third field are parasitics; with a model name they are devices.
- Internal node ``n`` of instance ``Xfoo`` is called ``foo/n`` (Magic's own reference syntax, so parent
  lines such as ``C5 out cap_op_0/VSUBS 1f`` bind to the child's node). A reference ``foo/p`` to a *port*
  ``p`` of ``Xfoo`` is merged with the parent net wired to that port.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from scifm.core.errors import DataError

from .units import ExpressionError, evaluate, parse_number

GROUND_NAMES = {"0", "gnd", "gnd!"}
DEVICE_KINDS = ("nfet", "pfet", "res", "cap", "diode", "bjt", "other")
_PARAM_TOKEN = re.compile(r"^([a-z_][\w.]*)=(.+)$", re.I)
_SUBNODE = re.compile(r"\.[tn]\d+$")


@dataclass
class Element:
    """One netlist statement inside a sub-circuit or at top level (names lower-case)."""

    name: str
    kind: str  # first letter of the name: x, m, r, c, d, q, v, i, l, ...
    nodes: tuple[str, ...]
    model: str | None  # sub-circuit / model name, None for numeric R/C/L
    value: str | None  # raw value expression of a numeric R/C/L
    params: dict[str, str]
    line: int


@dataclass
class Subckt:
    name: str
    ports: tuple[str, ...]
    params: dict[str, str]
    elements: list[Element]
    line: int


@dataclass
class Netlist:
    path: str
    subckts: dict[str, Subckt]
    elements: list[Element]  # top level
    params: dict[str, str]
    globals: set[str]


@dataclass
class Device:
    """A leaf device after flattening. ``terminals`` are raw hierarchical node names."""

    name: str
    kind: str  # one of DEVICE_KINDS
    model: str
    terminals: tuple[str, ...]
    params: dict[str, float]
    line: int


@dataclass
class FlatNetlist:
    """Flattened design. ``net_of`` maps every raw node name to its electrical net (representative name)."""

    path: str
    top: str
    ports: tuple[str, ...]
    devices: list[Device]
    caps: list[tuple[str, str, str, float]]  # (name, node a, node b, farads); raw node names
    resistors: list[tuple[str, str, str, float]]  # parasitic (name, a, b, ohms)
    net_of: dict[str, str] = field(default_factory=dict)

    def net(self, node: str) -> str:
        return self.net_of.get(node, node)

    @property
    def nets(self) -> list[str]:
        return sorted(set(self.net_of.values()))


# --------------------------------------------------------------------------------------------- reading


def _strip_inline_comment(line: str) -> str:
    # ' $ ' (whitespace on both sides) and ';' start comments; '$' inside names (buf_4$VAR1) is kept
    line = re.split(r"\s\$(?:\s|$)|;", line, maxsplit=1)[0]
    return line.rstrip()


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Join ``+`` continuations; drop comments and blank lines. Returns (first physical line no., text)."""
    out: list[tuple[int, str]] = []
    for i, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip()
        if not s or s.startswith("*"):
            continue
        s = _strip_inline_comment(s)
        if not s:
            continue
        if s.startswith("+"):
            if not out:
                raise _ParseError(i, "continuation line '+' with no statement before it")
            ln, prev = out[-1]
            out[-1] = (ln, prev + " " + s[1:].strip())
        else:
            out.append((i, s))
    return out


class _ParseError(Exception):
    def __init__(self, line: int, problem: str):
        self.line, self.problem = line, problem


def _tokens(text: str) -> list[str]:
    """Whitespace split keeping ``{...}`` / ``'...'`` expressions whole; ``k = v`` becomes ``k=v``."""
    toks: list[str] = []
    buf, depth, quote = "", 0, None
    for ch in text:
        if quote:
            buf += ch
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
            buf += ch
        elif ch == "{":
            depth += 1
            buf += ch
        elif ch == "}":
            depth -= 1
            buf += ch
        elif ch.isspace() and depth == 0:
            if buf:
                toks.append(buf)
                buf = ""
        else:
            buf += ch
    if buf:
        toks.append(buf)
    if quote or depth:
        raise ValueError("unbalanced quote or brace")
    merged: list[str] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t == "=" and merged and i + 1 < len(toks):
            merged[-1] = merged[-1] + "=" + toks[i + 1]
            i += 2
            continue
        if t.endswith("=") and len(t) > 1 and i + 1 < len(toks):
            merged.append(t + toks[i + 1])
            i += 2
            continue
        if t.startswith("=") and len(t) > 1 and merged:
            merged[-1] = merged[-1] + t
            i += 1
            continue
        merged.append(t)
        i += 1
    return merged


def _split_params(tokens: list[str]) -> tuple[list[str], dict[str, str]]:
    positional, params = [], {}
    for t in tokens:
        if t.lower() in ("params:", "param:"):
            continue
        m = _PARAM_TOKEN.match(t)
        if m:
            params[m.group(1).lower()] = m.group(2)
        else:
            if params:
                raise ValueError(f"positional field '{t}' after parameters")
            positional.append(t)
    return positional, params


def _parse_element(tokens: list[str], line: int) -> Element:
    name = tokens[0].lower()
    kind = name[0]
    positional, params = _split_params(tokens[1:])
    pos = [p.lower() for p in positional]
    if kind == "x":
        if len(pos) < 2:
            raise ValueError("X instance needs at least one node and a sub-circuit name")
        return Element(name, kind, tuple(pos[:-1]), pos[-1], None, params, line)
    if kind in "rcl":
        if len(pos) < 3:
            raise ValueError(f"{kind.upper()} element needs two nodes and a value or model")
        nodes, rest = tuple(pos[:2]), positional[2:]
        if len(rest) > 2:
            raise ValueError(f"too many fields: {' '.join(rest)}")
        first = rest[0]
        # a field starting like a number is a value (a bad one fails later with its line); else a model
        is_value = parse_number(first) is not None or first[0] in "{'\"+-." or first[0].isdigit()
        if is_value:
            if len(rest) == 2:  # 'R1 a b 10k model' (value + model) is a device
                return Element(name, kind, nodes, rest[1].lower(), first, params, line)
            return Element(name, kind, nodes, None, first, params, line)
        if len(rest) == 2:  # 'R1 a b model 10k'
            return Element(name, kind, nodes, first.lower(), rest[1], params, line)
        return Element(
            name, kind, nodes, first.lower(), params.get("r" if kind == "r" else kind), params, line
        )
    if kind == "m":
        if len(pos) not in (4, 5):
            raise ValueError("M transistor needs 3 or 4 nodes (d g s [b]) and a model name")
        return Element(name, kind, tuple(pos[:-1]), pos[-1], None, params, line)
    if kind == "d":
        if len(pos) != 3:
            raise ValueError("D diode needs 2 nodes and a model name")
        return Element(name, kind, tuple(pos[:2]), pos[2], None, params, line)
    if kind == "q":
        if len(pos) not in (4, 5):
            raise ValueError("Q transistor needs 3 or 4 nodes and a model name")
        return Element(name, kind, tuple(pos[:-1]), pos[-1], None, params, line)
    if kind in "vie" or kind in "fgh" or kind in "bjkstuwyzo":
        if len(pos) < 2:
            raise ValueError(f"{kind.upper()} element needs two nodes")
        return Element(name, kind, tuple(pos[:2]), None, " ".join(positional[2:]) or None, params, line)
    raise ValueError(f"unknown element type '{tokens[0][0]}'")


def parse_netlist(path: str | Path, text: str | None = None) -> Netlist:
    """Read a SPICE file into sub-circuits and top-level statements (no flattening yet)."""
    path = Path(path)
    if text is None:
        if not path.is_file():
            raise DataError(path, "netlist file not found")
        try:
            text = path.read_text(errors="strict")
        except UnicodeDecodeError:
            text = path.read_text(encoding="latin-1")
    try:
        lines = logical_lines(text)
    except _ParseError as exc:
        raise DataError(path, exc.problem, record=f"line {exc.line}") from None
    subckts: dict[str, Subckt] = {}
    top: list[Element] = []
    params: dict[str, str] = {}
    globals_: set[str] = set(GROUND_NAMES)
    current: Subckt | None = None
    for ln, s in lines:
        try:
            tokens = _tokens(s)
        except ValueError as exc:
            raise DataError(path, f"malformed line ({exc}): {s[:80]}", record=f"line {ln}") from None
        head = tokens[0].lower()
        if head.startswith("."):
            if head == ".subckt":
                if current is not None:
                    raise DataError(
                        path, f"nested .subckt inside '{current.name}' (missing .ends?)", record=f"line {ln}"
                    )
                try:
                    positional, defaults = _split_params(tokens[1:])
                except ValueError as exc:
                    raise DataError(path, f"malformed .subckt header: {exc}", record=f"line {ln}") from None
                if not positional:
                    raise DataError(path, ".subckt without a name", record=f"line {ln}")
                name = positional[0].lower()
                if name in subckts:
                    raise DataError(
                        path,
                        f"sub-circuit '{name}' defined twice (first at line {subckts[name].line})",
                        record=f"line {ln}",
                    )
                current = Subckt(name, tuple(p.lower() for p in positional[1:]), defaults, [], ln)
            elif head == ".ends":
                if current is None:
                    raise DataError(path, ".ends without a matching .subckt", record=f"line {ln}")
                subckts[current.name] = current
                current = None
            elif head in (".param", ".params"):
                try:
                    _, p = _split_params(tokens[1:])
                except ValueError as exc:
                    raise DataError(path, f"malformed .param: {exc}", record=f"line {ln}") from None
                (current.params if current is not None else params).update(p)
            elif head == ".global":
                globals_.update(t.lower() for t in tokens[1:])
            elif head in (".include", ".inc", ".lib"):
                raise DataError(
                    path, f"{head} is not supported: concatenate the files first", record=f"line {ln}"
                )
            elif head == ".end":
                break
            # .model, .option, .temp, analyses, ... do not change the circuit graph
            continue
        try:
            el = _parse_element(tokens, ln)
        except ValueError as exc:
            raise DataError(path, f"malformed element ({exc}): {s[:80]}", record=f"line {ln}") from None
        (current.elements if current is not None else top).append(el)
    if current is not None:
        raise DataError(path, f"sub-circuit '{current.name}' has no .ends", record=f"line {current.line}")
    return Netlist(str(path), subckts, top, params, globals_)


# ------------------------------------------------------------------------------------------- flattening


def classify_model(model: str) -> str | None:
    """Device kind from a PDK model name, or None if it does not look like a primitive device."""
    m = model.lower()
    if "nfet" in m or "nmos" in m:
        return "nfet"
    if "pfet" in m or "pmos" in m:
        return "pfet"
    if "pnp" in m or "npn" in m or "bjt" in m:
        return "bjt"
    if "diode" in m:
        return "diode"
    if "cap" in m or "mim" in m or "varactor" in m:
        return "cap"
    if "res" in m:
        return "res"
    return None


def _m_kind(model: str) -> str:
    m = model.lower()
    if "pfet" in m or "pmos" in m or m.startswith("p"):
        return "pfet"
    return "nfet"


def find_top(netlist: Netlist) -> str | None:
    """The sub-circuit that no other instantiates (the last defined one if several); None if the file
    has top-level device statements of its own."""
    if any(e.kind != "x" or e.model not in netlist.subckts for e in netlist.elements if e.kind in "xmrcdq"):
        return None
    used = {e.model for e in netlist.elements if e.kind == "x"}
    if used:
        return None  # top-level X instances form the design
    for s in netlist.subckts.values():
        used.update(e.model for e in s.elements if e.kind == "x")
    roots = [n for n in netlist.subckts if n not in used]
    if not roots:
        return None
    return roots[-1]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        parent = self.parent
        root = parent.setdefault(a, a)
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:  # path compression, iterative (meshes can be long chains)
            parent[a], a = root, parent[a]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        # the representative is the most 'top-level' name: not a sub-node, fewest hierarchy levels
        if _name_rank(rb) < _name_rank(ra):
            ra, rb = rb, ra
        self.parent[rb] = ra


def _name_rank(name: str) -> tuple[int, int, int, str]:
    return (1 if _SUBNODE.search(name) else 0, name.count("/"), len(name), name)


def flatten(netlist: Netlist, top: str | None = None, merge_parasitic_r: bool = True) -> FlatNetlist:
    """Expand the hierarchy below ``top`` (default: ``find_top``) into leaf devices and parasitics.

    ``merge_parasitic_r``: nodes joined by numeric R lines (Magic ``extresist`` meshes) are one electrical
    net in ``net_of`` (union-find), so ``a.t3`` and ``a.n7`` map back to ``a``.
    """
    path = netlist.path
    if top is None:
        top = find_top(netlist)
    if top is not None and top.lower() not in netlist.subckts:
        raise DataError(path, f"top sub-circuit '{top}' is not defined")
    top = top.lower() if top else None
    gscope: dict[str, float] = {}
    for k, v in netlist.params.items():
        try:
            gscope[k] = evaluate(v, gscope)
        except ExpressionError as exc:
            raise DataError(path, f".param {k}: {exc}") from None

    devices: list[Device] = []
    caps: list[tuple[str, str, str, float]] = []
    resistors: list[tuple[str, str, str, float]] = []
    uf = _UnionFind()

    def num(expr: str, scope: dict[str, float], el: Element, what: str) -> float:
        try:
            return evaluate(expr, scope)
        except ExpressionError as exc:
            raise DataError(
                path, f"{el.name}: cannot evaluate {what} '{expr}': {exc}", record=f"line {el.line}"
            ) from None

    def _expand_body(elements, prefix, binding, scope, stack, mult):
        def node(n: str) -> str:
            if n in binding:
                return binding[n]
            if n in netlist.globals:
                return n
            name = prefix + n
            uf.find(name)
            return name

        def add(el: Element, dkind: str, model: str) -> None:
            values: dict[str, float] = {}
            for key, v in el.params.items():
                values[key] = num(v, scope, el, key)
            if el.kind in "rc" and el.value is not None and el.model is not None:
                values.setdefault("value", num(el.value, scope, el, "value"))
            values["m"] = values.get("m", 1.0) * mult
            devices.append(
                Device(prefix + el.name, dkind, model, tuple(node(n) for n in el.nodes), values, el.line)
            )

        for el in elements:
            k = el.kind
            if k == "x":
                sub = netlist.subckts.get(el.model)
                if sub is not None:
                    if el.model in stack:
                        chain = " -> ".join((*stack, el.model))
                        raise DataError(
                            path, f"recursive sub-circuit definition: {chain}", record=f"line {el.line}"
                        )
                    if len(el.nodes) != len(sub.ports):
                        raise DataError(
                            path,
                            f"{el.name}: sub-circuit '{sub.name}' has {len(sub.ports)} ports "
                            f"but {len(el.nodes)} nodes are given",
                            record=f"line {el.line}",
                        )
                    inner = dict(scope)
                    for key, v in sub.params.items():
                        inner[key] = num(v, inner, el, f"default {key}")
                    for key, v in el.params.items():
                        inner[key] = num(v, scope, el, key)  # instance values see the caller's scope
                    child_prefix = prefix + el.name[1:] + "/"
                    child_binding = {}
                    for port, n in zip(sub.ports, el.nodes, strict=True):
                        outer = node(n)
                        child_binding[port] = outer
                        # Magic references a child's port as '<inst>/<port>' from the parent: same net
                        uf.union(outer, child_prefix + port)
                    m = mult * inner.get("m", 1.0) if "m" in el.params else mult
                    _expand_body(sub.elements, child_prefix, child_binding, inner, (*stack, el.model), m)
                    continue
                dkind = classify_model(el.model)
                if dkind is None:
                    raise DataError(
                        path, f"{el.name}: undefined sub-circuit '{el.model}'", record=f"line {el.line}"
                    )
                add(el, dkind, el.model)
            elif k == "m":
                add(el, _m_kind(el.model), el.model)
            elif k == "d":
                add(el, "diode", el.model)
            elif k == "q":
                add(el, "bjt", el.model)
            elif k in "rc":
                if el.model is not None:
                    add(el, "res" if k == "r" else "cap", el.model)
                    continue
                value = num(el.value, scope, el, "value")
                a, b = node(el.nodes[0]), node(el.nodes[1])
                if k == "c":
                    caps.append((prefix + el.name, a, b, value))
                else:
                    resistors.append((prefix + el.name, a, b, value))
                    if merge_parasitic_r:
                        uf.union(a, b)
            else:  # sources, inductors, controlled sources only contribute nodes
                for n in el.nodes:
                    node(n)

    if top is None:
        ports: tuple[str, ...] = ()
        _expand_body(netlist.elements, "", {}, dict(gscope), (), 1.0)
    else:
        sub = netlist.subckts[top]
        ports = sub.ports
        scope = dict(gscope)
        for k, v in sub.params.items():
            try:
                scope[k] = evaluate(v, scope)
            except ExpressionError as exc:
                raise DataError(
                    path, f".subckt {top} parameter {k}: {exc}", record=f"line {sub.line}"
                ) from None
        for p in ports:
            uf.find(p)
        _expand_body(sub.elements, "", {}, scope, (top,), 1.0)
    net_of = {n: uf.find(n) for n in list(uf.parent)}
    return FlatNetlist(path, top or "<top>", ports, devices, caps, resistors, net_of)


def read_flat(path: str | Path, top: str | None = None, merge_parasitic_r: bool = True) -> FlatNetlist:
    """``flatten(parse_netlist(path))``."""
    return flatten(parse_netlist(path), top=top, merge_parasitic_r=merge_parasitic_r)


def device_counts(flat: FlatNetlist) -> Counter:
    return Counter(d.kind for d in flat.devices)
