"""SPICE parser: numbers, dialect edge cases, clear errors, and every real netlist against a direct count."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from scifm.circuitgcl.spice import parse_netlist, read_flat
from scifm.circuitgcl.units import evaluate, parse_number
from scifm.core.errors import DataError


def write(tmp_path: Path, text: str, name: str = "n.sp") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "tok,val",
    [
        ("4.7f", 4.7e-15),
        ("1MEG", 1e6),
        ("1m", 1e-3),
        ("2.5k", 2.5e3),
        ("10pF", 1e-11),
        ("7.73e-20", 7.73e-20),
        ("3a", 3e-18),
        ("1g", 1e9),
        ("2t", 2e12),
        ("5n", 5e-9),
        ("0.42", 0.42),
        ("-1.5u", -1.5e-6),
        ("1e3k", 1e6),
        ("1mil", 25.4e-6),
    ],
)
def test_numbers(tok, val):
    assert parse_number(tok) == pytest.approx(val, rel=1e-12)


def test_expressions():
    scope = {"w": 2.0, "l": 0.5}
    assert evaluate("{W*2}", scope) == 4.0
    assert evaluate("'w/l + 1u'", scope) == pytest.approx(4.000001)
    assert evaluate("{sqrt(4)*2^3}", {}) == 16.0
    assert evaluate("w", scope) == 2.0
    with pytest.raises(ValueError):
        evaluate("{__import__('os')}", {})
    with pytest.raises(ValueError):
        evaluate("{nope*2}", scope)


EDGE = """* title line is a comment
*.subckt ghost a b
*+ c d
** x2 a b ghost
.param wp=2u
.SUBCKT inv A Y VDD VSS wn=1
MP1 Y A VDD VDD pch W={wp} L=0.15u
mn1 y a vss vss NCH w='wn*1u' l=150n $ inline comment
.ENDS inv
.subckt top in out vdd vss
Xi1 in mid vdd vss INV wn=2
Xi2 mid
+ out vdd vss inv
X8 d g s b sky130_fd_pr__nfet_01v8 ad=0.1218 pd=1.42 as=0.1218 ps=1.42 w=0.42 l=0.5
**devattr s=3016,162 d=5408,312
R0 mid out sky130_fd_pr__res_generic_po w=0.4 l=5
C1 MID OUT 1.5f
C2 i1/Y vss 2F
C5 rocket_0/0 out 1f
c3 i2/A vss 3f
C4 out vss 1e-15
.ends
"""


def test_dialect_edge_cases(tmp_path):
    flat = read_flat(write(tmp_path, EDGE))
    assert flat.top == "top"
    kinds = Counter(d.kind for d in flat.devices)
    assert kinds == {"pfet": 2, "nfet": 3, "res": 1}
    p1 = next(d for d in flat.devices if d.name == "i1/mp1")
    assert p1.params["w"] == pytest.approx(2e-6) and p1.params["l"] == pytest.approx(0.15e-6)
    n1 = next(d for d in flat.devices if d.name == "i1/mn1")
    assert n1.params["w"] == pytest.approx(2e-6)  # instance parameter wn=2 overrides the default
    n2 = next(d for d in flat.devices if d.name == "i2/mn1")
    assert n2.params["w"] == pytest.approx(1e-6)
    assert flat.net(n2.terminals[1]) == "mid"  # port 'a' of i2 bound to the parent net (case folded)
    caps = {c[0]: c for c in flat.caps}
    assert caps["c1"][3] == pytest.approx(1.5e-15) and caps["c2"][3] == pytest.approx(2e-15)
    # '<inst>/<port>' from the parent is the parent net wired to that port: i2/A -> mid, i1/Y -> mid
    assert flat.net(caps["c3"][1]) == "mid"
    assert flat.net(caps["c2"][1]) == "mid"
    assert flat.net(caps["c5"][1]) == "rocket_0/0"  # reference into a cell with no .subckt: plain node
    assert caps["c4"][3] == 1e-15
    x8 = next(d for d in flat.devices if d.name == "x8")
    assert x8.terminals == ("d", "g", "s", "b") and x8.params["ad"] == 0.1218


def test_rc_mesh_union_and_subnodes(tmp_path):
    text = """.subckt t a b vss
X0 a.t0 g.t0 b.t1 vss sky130_fd_pr__nfet_01v8 w=1 l=0.15
R0 a a.t0 10.5
R1 a.n0 a 3
R2 b b.t1 7
C0 a.n0 vss 1f
C1 comparator_1.n1 b.t1 2f
.ends
"""
    flat = read_flat(write(tmp_path, text))
    assert flat.net("a.t0") == "a" and flat.net("a.n0") == "a" and flat.net("b.t1") == "b"
    assert flat.net("comparator_1.n1") == "comparator_1.n1"  # a real net that only looks like a sub-node
    assert len(flat.resistors) == 3


@pytest.mark.parametrize(
    "text,line,needle",
    [
        (
            ".subckt a x\nX1 x b\n.ends\n.subckt b y\nX1 y a\n.ends\n.subckt top z\nX0 z a\n.ends\n",
            5,
            "recursive",
        ),
        (".subckt top a\nX1 a b nosuchcell\n.ends\n", 2, "undefined sub-circuit 'nosuchcell'"),
        (".subckt top a\nC1 a\n.ends\n", 2, "malformed element"),
        ("+ a b\n", 1, "continuation"),
        (".subckt top a\nR1 a b {1+\n.ends\n", 2, "malformed line"),
        (".subckt top a\nQ1 a\n.ends\n", 2, "malformed element"),
        (".subckt top a\nX1 a b inv\n.ends\n.subckt inv a\n.ends\n", 2, "has 1 ports but 2 nodes"),
        (".subckt top a\nC1 a 0 1x+\n.ends\n", 2, "cannot evaluate"),
        (".subckt top a\nC1 a 0 1f\n", 1, "no .ends"),
        (".ends\n", 1, ".ends without"),
        (".subckt a x\n.ends\n.subckt a y\n.ends\n", 3, "defined twice"),
    ],
)
def test_malformed_inputs_name_file_and_line(tmp_path, text, line, needle):
    path = write(tmp_path, text, "bad.spice")
    with pytest.raises(DataError) as err:
        read_flat(path)
    msg = str(err.value)
    assert str(path) in msg and f"line {line}" in msg and needle in msg, msg


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        parse_netlist(tmp_path / "nope.sp")


# counts from shared/data/circuits/sky130/SOURCE.md: transistors, other devices, flattened C elements
SOURCE_TABLE = {
    "sky130_hcmus_ip__instramp": (190, 330, 598, 0),
    "sky130_td_ip__opamp_hp": (782, 46, 4085, 0),
    "sky130_gff_ip__bgr_1.2v": (136, 201, 1874, 0),
    "sky130_ajc_ip__por": (1224, 133, 4708, 0),
    "sky130_vbl_ip__overvoltage": (156, 260, 4165, 0),
    "sky130_ajc_ip__brownout": (1162, 133, 3747, 16366),
    "sky130_ef_ip__rc_osc_500k": (51, 142, 1094, 1698),
    "sky130_be_ip__lsxo": (369, 131, 1581, 4339),
    "sky130_leo_ip__comparator": (39, 1, 335, 4988),
    "ttsky25_two_stage_opamp": (145, 2, 708, 6110),
    "tt09-analogmux": (1178, 8, 9862, 14598),
    "sky130_sw_ip__bgrref_por": (504, 189, 3662, 8519),
}


def direct_count(path: Path) -> tuple[int, int, int, int]:
    """Independent count: per .subckt statement tallies, multiplied through the instance tree."""
    text = re.sub(r"\n\+", " ", path.read_text())  # join continuation lines
    names = list(
        dict.fromkeys(ln.split()[1].lower() for ln in text.splitlines() if ln.lower().startswith(".subckt"))
    )
    blocks: dict[str, Counter] = {n: Counter() for n in names}
    insts: dict[str, list[str]] = {n: [] for n in names}
    cur = None
    for raw in text.splitlines():
        s = raw.split()
        if not s or s[0].startswith("*"):
            continue
        if s[0].lower() == ".subckt":
            cur = s[1].lower()
        elif s[0].lower() == ".ends":
            cur = None
        elif cur is not None:
            pos = [t for t in s[1:] if "=" not in t]
            k = s[0][0].lower()
            if k == "x":
                model = pos[-1].lower()
                if model in names:
                    insts[cur].append(model)
                elif "fet" in model:
                    blocks[cur]["t"] += 1
                else:
                    blocks[cur]["o"] += 1
            elif k in "rc":
                try:
                    float(re.sub(r"[fp]$", "", pos[2]))
                    blocks[cur][k] += 1
                except ValueError:
                    blocks[cur]["o"] += 1

    def total(cell: str) -> Counter:
        c = Counter(blocks[cell])
        for child in insts[cell]:
            c += total(child)
        return c

    used = {m for v in insts.values() for m in v}
    top = [b for b in blocks if b not in used][-1]
    c = total(top)
    return c["t"], c["o"], c["c"], c["r"]


def test_every_real_netlist_matches_direct_count(circuits):
    files = sorted((circuits / "sky130").glob("*.spice"))
    assert len(files) == 12
    for f in files:
        flat = read_flat(f)
        kinds = Counter(d.kind for d in flat.devices)
        got = (
            kinds["nfet"] + kinds["pfet"],
            sum(kinds.values()) - kinds["nfet"] - kinds["pfet"],
            len(flat.caps),
            len(flat.resistors),
        )
        key = next(k for k in SOURCE_TABLE if f.name.startswith(k))
        assert got == SOURCE_TABLE[key], f.name
        assert got == direct_count(f), f.name
