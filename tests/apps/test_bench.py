"""Benchmark records, suite runner and leaderboard (Markdown + static HTML checked in headless Chromium)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scifm.bench.board import render_board
from scifm.bench.runner import run_suite
from scifm.bench.suites import load_suite, substitute
from scifm.bench.summary_plots import _label, pareto_front
from scifm.bench.tables import build_table
from scifm.core.errors import ConfigError, DataError
from scifm.core.provenance import SCHEMA, provenance, read_record, validate_record, write_record

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
MLIP_COLUMNS = {
    "forces_mae_meV_per_A": {"better": "lower", "unit": "meV/Å", "label": "F MAE"},
    "energy_mae_meV_per_atom": {"better": "lower", "unit": "meV/atom", "label": "E MAE"},
    "steps_per_s": {"better": "higher", "unit": "1/s", "label": "speed"},
    "n_parameters": {"better": None, "label": "params"},
}


def _png(path: Path, k: int = 0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=40)
    ax.plot([0, 1, 2], [0, k, 1])
    fig.savefig(path)
    plt.close(fig)
    return path


def _prov(ts: str = "2025-01-01T00:00:00Z") -> dict:
    return {
        "git_commit": "0123456789abcdef",
        "git_dirty": False,
        "packages": {"torch": "2.x"},
        "hardware": {"cpu": "test CPU", "gpu": None, "threads": 2, "torch_threads": 1},
        "python": "3.11",
        "platform": "linux",
        "timestamp": ts,
        "command": "test",
        "wall_time_s": 1.0,
    }


def _mlip_rows():
    return [
        {
            "model": m,
            "forces_mae_meV_per_A": f,
            "energy_mae_meV_per_atom": e,
            "steps_per_s": s,
            "n_parameters": n,
        }
        for m, f, e, s, n in [
            ("painn", 40.0, 3.0, 50.0, 600000),
            ("schnet", 80.0, 2.0, 200.0, 400000),
            ("slow-bad", 90.0, 9.0, 10.0, 100),
        ]
    ]


@pytest.fixture
def results(tmp_path) -> Path:
    """A results folder like the committed one: records of several suites, a re-run, and foreign JSON."""
    res = tmp_path / "results"
    _png(res / "mlip" / "default" / "parity.png", 1)
    _png(res / "mlip" / "default" / "learning_curve.png", 2)
    write_record(
        res / "mlip" / "default-20250101T000000Z.json",
        "mlip",
        "default",
        _mlip_rows()[:1],
        MLIP_COLUMNS,
        prov=_prov("2025-01-01T00:00:00Z"),
        title="old run",
    )
    write_record(
        res / "mlip" / "default-20250201T000000Z.json",
        "mlip",
        "default",
        _mlip_rows(),
        MLIP_COLUMNS,
        plots=["default/parity.png", "default/learning_curve.png"],
        seed=0,
        title="MLIP | bundled",
        prov=_prov("2025-02-01T00:00:00Z"),
    )
    _png(res / "prose" / "rama.png", 3)
    write_record(
        res / "prose" / "ala2.json",
        "prose",
        "ala2",
        [{"model": "tarflow", "ess_percent": 12.5, "w1_energy_kT": 0.8}],
        {"ess_percent": {"better": "higher", "unit": "%"}, "w1_energy_kT": {"better": "lower"}},
        plots=["rama.png"],
        prov=_prov(),
    )
    write_record(
        res / "circuit" / "r2.json",
        "circuit",
        "r2",
        [
            {"method": m, "design": d, "edge_r2": r}
            for m, d, r in [
                ("gcl", "ota", 0.9),
                ("gcl", "ldo", 0.7),
                ("mlp", "ota", 0.5),
                ("mlp", "ldo", 0.6),
            ]
        ],
        {"edge_r2": {"better": "higher", "label": "edge R²"}},
        prov=_prov(),
    )
    # what other helpers write before converting to the schema
    (res / "dpot").mkdir()
    (res / "dpot" / "rollout.json").write_text(json.dumps({"l2_rel": 0.1, "model": "dpot-tiny"}))
    (res / "dpot" / "broken.json").write_text("{not json")
    return res


# --- records -------------------------------------------------------------------------------------------


def test_write_record_round_trip_and_provenance(tmp_path):
    path = write_record(
        tmp_path / "mlip" / "r.json",
        "mlip",
        "r",
        _mlip_rows(),
        MLIP_COLUMNS,
        seed=3,
        config={"out": tmp_path, "sizes": (1, 2)},
        wall_time_s=2.5,
        command="sci-fm bench run mlip",
    )
    rec = read_record(path)
    assert rec["schema"] == SCHEMA and rec["seed"] == 3 and rec["rows"][1]["model"] == "schnet"
    assert rec["config"] == {"out": str(tmp_path), "sizes": [1, 2]}  # made JSON-able
    p = rec["provenance"]
    assert p["command"] == "sci-fm bench run mlip" and p["wall_time_s"] == 2.5
    assert p["timestamp"].endswith("Z") and p["packages"]["torch"]
    assert {"cpu", "gpu", "threads", "torch_threads"} <= set(p["hardware"]) and p["hardware"]["threads"] >= 1
    assert [f.name for f in path.parent.iterdir()] == ["r.json"]  # no temp file left behind


def test_provenance_records_the_git_commit():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    head = git.stdout.strip()
    p = provenance("x", 1.0, repo=REPO)
    assert p["git_commit"] == head and isinstance(p["git_dirty"], bool)


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda r: r.update(schema="other/1"), "schema"),
        (lambda r: r.update(rows=[]), "rows"),
        (lambda r: r["rows"][0].update(forces_mae_meV_per_A=float("nan")), "nan"),
        (lambda r: r["rows"][0].update(forces_mae_meV_per_A=[1, 2]), "number"),
        (lambda r: r["columns"]["steps_per_s"].update(better="faster"), "better"),
        (lambda r: r["columns"].update(missing={"better": "lower"}), "appears in no row"),
        (lambda r: r.update(plots=["/abs/p.png"]), "relative"),
        (lambda r: r.update(name="a b"), "name"),
        (lambda r: r["provenance"].pop("git_commit"), "git_commit"),
    ],
)
def test_invalid_records_are_rejected(tmp_path, change, problem):
    path = write_record(tmp_path / "ok.json", "mlip", "ok", _mlip_rows(), MLIP_COLUMNS, prov=_prov())
    rec = json.loads(path.read_text())
    validate_record(rec)
    change(rec)
    with pytest.raises(ValueError, match=re.compile(problem, re.I)):
        validate_record(rec)
    if problem in ("schema", "nan"):  # write_record sets the schema itself and writes NaN as null
        return
    # write_record refuses it too, naming the file, and writes nothing
    with pytest.raises(DataError, match="bad.json"):
        write_record(
            tmp_path / "bad.json",
            rec["suite"],
            rec["name"],
            rec["rows"],
            rec["columns"],
            plots=rec.get("plots", []),
            prov=rec["provenance"],
        )
    assert not (tmp_path / "bad.json").exists()


# --- tables and plots ----------------------------------------------------------------------------------


def test_best_value_per_column_follows_better():
    table = build_table({"rows": _mlip_rows(), "columns": MLIP_COLUMNS})
    keys = [c.key for c in table.columns]
    assert keys[0] == "model"  # identifiers first
    best = {keys[i]: [r[0].text for r in table.rows if r[i].best] for i in range(len(keys))}
    assert best["forces_mae_meV_per_A"] == ["painn"]  # lowest
    assert best["energy_mae_meV_per_atom"] == ["schnet"]
    assert best["steps_per_s"] == ["schnet"]  # highest
    assert best["n_parameters"] == [] and best["model"] == []  # unranked
    one = build_table({"rows": _mlip_rows()[:1], "columns": MLIP_COLUMNS})
    assert not any(c.best for c in one.rows[0])  # a single value is no ranking


def test_pareto_front():
    # (speed, error): (50, 40) and (200, 80) trade off; (10, 90) is beaten by both; (200, 85) by (200, 80)
    pts = [(50, 40), (200, 80), (10, 90), (200, 85)]
    assert pareto_front(pts) == [1, 0]


def test_plot_labels_name_a_recipe_probe_by_its_variant():
    # two BAMBOO rows trained with different recipes must not share a label
    assert _label({"model": "bamboo", "variant": "bamboo_bs1_lr1e-3"}) == "bamboo_bs1_lr1e-3"
    assert _label({"model": "bamboo"}) == "bamboo"
    assert _label({"method": "snis"}) == "snis"


# --- suites and runner ---------------------------------------------------------------------------------


def test_unknown_suite_lists_the_available_ones(tmp_path):
    (tmp_path / "mlip.yaml").write_text("jobs: [{name: a, steps: [{python: 'm:f'}]}]\n")
    with pytest.raises(ConfigError, match=r"no benchmark suite 'nope'.*available suites: mlip"):
        load_suite("nope", tmp_path)
    (tmp_path / "bad.yaml").write_text("jobs: [{name: a, stepz: []}]\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_suite("bad", tmp_path)


def test_committed_configs_parse():
    configs = REPO / "benchmarks" / "configs"
    names = sorted(p.stem for p in configs.glob("*.yaml"))
    assert "mlip" in names
    for name in names:
        full, quick = load_suite(name, configs), load_suite(name, configs, quick=True)
        assert full.jobs and quick.jobs and quick.name != full.name


def test_substitution_keeps_types():
    v = {"workdir": "/w", "n": 3, "none": None}
    assert substitute({"a": "{n}", "b": "{workdir}/x-{n}", "c": ["{none}", "{unknown}", "{k: 1}"]}, v) == {
        "a": 3,
        "b": "/w/x-3",
        "c": [None, "{unknown}", "{k: 1}"],
    }


SUITE_YAML = """
title: toy suite
name: toy
seed: 7
columns:
  err: {better: lower, unit: eV}
  speed: {better: higher}
  absent: {better: lower}
jobs:
  - name: small
    row: {model: small}
    vars: {scale: 2.0}
    steps:  # the command writes a list ('x') that is no table cell
      - python: scifm.bench.steps:subset_extxyz
        args: {source: "{src}", out: "{workdir}/sub.extxyz", max_traj: 2, max_per_traj: 1}
      - command:
          - python
          - -c
          - "import json; json.dump({'err': {scale}, 'speed': 5, 'x': [1]}, open('m.json', 'w'))"
    metrics: ["{workdir}/m.json"]
    plots: ["{plot}"]
    quick: {vars: {scale: 1.0}}
  - name: skipped-when-quick
    steps: [{command: [python, -c, "raise SystemExit(3)"]}]
    quick: false
"""


def test_run_suite_writes_a_new_record_each_run(tmp_path):
    import ase
    import ase.io

    src = tmp_path / "frames.extxyz"
    frames = [ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], info={"traj_id": t}) for t in (0, 0, 1, 2)]
    ase.io.write(src, frames, format="extxyz")
    plot = _png(tmp_path / "p.png")
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "toy.yaml").write_text(SUITE_YAML.replace("{src}", str(src)).replace("{plot}", str(plot)))
    results = tmp_path / "results"
    first = run_suite("toy", configs, results, REPO, quick=True)
    rec = read_record(first)
    assert rec["suite"] == "toy" and rec["name"] == "toy-quick" and rec["seed"] == 7
    assert rec["rows"] == [{"model": "small", "err": 1.0, "speed": 5}]  # only declared columns (+ row ids)
    assert set(rec["columns"]) == {"err", "speed"}  # a column no row has is dropped
    assert rec["config"]["quick"] is True and rec["config"]["suite_config"].endswith("toy.yaml")
    assert rec["provenance"]["wall_time_s"] > 0
    assert (first.parent / rec["plots"][0]).is_file()
    import time

    time.sleep(1.1)  # records are named by the second
    # the full run has a failing job: a clear error naming the job, and no record
    with pytest.raises(Exception, match="skipped-when-quick.*exited with 3"):
        run_suite("toy", configs, results, REPO, quick=False, workdir=tmp_path / "work")
    second = run_suite("toy", configs, results, REPO, quick=True)
    assert second != first and first.exists()
    assert len(list((results / "toy").glob("*.json"))) == 2


MULTI_YAML = """
columns:
  err: {better: lower}
jobs:
  - name: multi
    row: {suite_id: m}
    vars: {flags: [--a, "1"], nothing: null}
    steps:
      - command:
          - python
          - -c
          - |
            import json, os, sys
            assert sys.argv[1:] == ['--a', '1'], sys.argv  # a list variable expands, null drops out
            for d in ('x', 'y'):
                os.makedirs(d, exist_ok=True)
                open(os.path.join(d, 'p.png'), 'wb').write(open('{png}', 'rb').read())
            json.dump({'rows': [{'model': 'a', 'err': 1.0, 'curve': [1, 2]}, {'model': 'b', 'err': 2.0}],
                       'ignored': 5}, open('out.json', 'w'))
          - "{flags}"
          - "{nothing}"
    metrics: ["{workdir}/out.json"]
    plots: ["{workdir}/*/p.png", "{workdir}/none-*.png"]
"""


def test_a_job_can_yield_several_rows_and_glob_its_plots(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "multi.yaml").write_text(MULTI_YAML.replace("{png}", str(_png(tmp_path / "src.png"))))
    rec = read_record(run_suite("multi", configs, tmp_path / "results", REPO))
    # one row per entry: the job's identifiers first, the entry's scalars (lists dropped), nothing else
    assert rec["rows"] == [
        {"suite_id": "m", "model": "a", "err": 1.0},
        {"suite_id": "m", "model": "b", "err": 2.0},
    ]
    # two plots with one file name from two folders both survive
    assert sorted(Path(p).name for p in rec["plots"]) == ["multi-p.png", "multi-y-p.png"]
    (configs / "multi.yaml").write_text(
        MULTI_YAML.replace("{png}", str(tmp_path / "src.png")).replace("'rows': [", "'rows': [], 'x': [")
    )
    import time

    time.sleep(1.1)
    with pytest.raises(ConfigError, match="non-empty list"):
        run_suite("multi", configs, tmp_path / "results", REPO, workdir=tmp_path / "work")


def test_converters_of_the_committed_benchmark_outputs():
    from scifm.bench.steps import circuit_rows, dpot_rows

    res = REPO / "benchmarks" / "results"
    report = res / "dpot" / "full_cuda" / "benchmark.json"
    if not report.is_file():
        pytest.skip("committed DPOT result missing")
    data = json.loads(report.read_text())
    rows = dpot_rows(str(report))["rows"]
    assert len(rows) == 3 * 2 + 3  # (DPOT, FNO) per pre-training set + three transfer runs
    by = {(r["dataset"], r["model"]): r for r in rows}
    fno = by[("shallow_water", "FNO (this dataset only)")]
    assert fno["l2re"] == data["l2re_table"]["shallow_water"]["fno"]
    pre, scr = by[("ns_nu1e-4", "DPOT pre-trained + fine-tuned")], by[("ns_nu1e-4", "DPOT from scratch")]
    assert pre["l2re_reduction_vs_scratch"] == pytest.approx(1 - pre["l2re"] / scr["l2re"])
    transfer = res / "circuitgcl" / "transfer.json"
    rows = circuit_rows([str(transfer)])["rows"]
    raw = json.loads(transfer.read_text())
    c = next(r for r in rows if r["method"].startswith("(c)"))
    seeds = [r["edge_r2"] for r in raw["runs"]["c_circuitgcl"]]
    mean = sum(seeds) / len(seeds)
    assert c["edge_r2"] == pytest.approx(mean)
    assert c["edge_r2_std"] == pytest.approx((sum((x - mean) ** 2 for x in seeds) / len(seeds)) ** 0.5)
    assert rows[-1]["method"].startswith("reference") and rows[-1]["edge_r2"] < 0
    per = circuit_rows([str(transfer)], per_design=True)["rows"]
    assert len(per) == len(raw["summary"]) * len(raw["split"]["test"]) and all("design" in r for r in per)


def test_every_committed_result_is_on_the_board():
    """Issue 9: each JSON under benchmarks/results/ is a valid record or the source a record converts."""
    from scifm.bench.records import load_records

    records, warnings = load_records(REPO / "benchmarks" / "results")
    assert warnings == []
    assert {r.data["suite"] for r in records} >= {"dpot", "circuit"}
    for r in records:
        for p in r.data.get("plots", []):
            assert (r.path.parent / p).is_file(), (r.path, p)


def test_converted_sources_are_not_skipped_files(results):
    (results / "dpot" / "broken.json").unlink()
    board = render_board(results, results.parent / "b1")
    assert board.warnings == ["dpot/rollout.json: not a scifm-bench/1 record (schema: None); skipped"]
    write_record(
        results / "dpot" / "rollout-record.json",
        "dpot",
        "r",
        [{"l2_rel": 0.1}],
        {"l2_rel": {"better": "lower"}},
        config={"sources": ["rollout.json"]},
        prov=_prov(),
    )
    board = render_board(results, results.parent / "b2")
    assert board.warnings == [] and "dpot" in board.suites


# --- the board -----------------------------------------------------------------------------------------


def test_board_markdown_and_html(results, tmp_path):
    out = tmp_path / "board"
    board = render_board(results, out)
    md = (out / "leaderboard.md").read_text()
    html = (out / "index.html").read_text()
    # suites in the order, each with its newest run as the table
    assert [m.group(1) for m in re.finditer(r"^## (\w+)", md, re.M)] == [
        "mlip",
        "prose",
        "circuit",
        "Skipped",
    ]
    assert "| painn | **40** | 3 | 50 | 600000 |" in md
    assert "| schnet | 80 | **2** | **200** | 400000 |" in md
    assert "### MLIP | bundled (`default`)" in md
    assert "Earlier runs of `default`" in md and "default-20250101T000000Z.json" in md
    # every image link resolves, relative to the md file
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {Path(x).name for x in links} >= {
        "parity.png",
        "learning_curve.png",
        "rama.png",
        "mlip-pareto.png",
        "circuit-r2-per-design.png",
    }
    assert all((out / x).is_file() and not Path(x).is_absolute() for x in links)
    # non-schema and broken JSON are listed, not fatal
    assert len(board.warnings) == 2 and all(w.startswith("dpot/") for w in board.warnings)
    assert "dpot/rollout.json" in html and "dpot/broken.json" in md
    # HTML: one table per record (the old run inside <details>), best cells starred, nothing remote
    assert html.count('<table class="board"') == 4
    assert html.count(" ★</td>") == 3 + 1  # mlip newest run and circuit; one-row tables rank nothing
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    # re-rendering replaces stale images
    (out / "img" / "stale.png").write_bytes(b"x")
    render_board(results, out)
    assert not (out / "img" / "stale.png").exists()


def test_board_of_an_empty_results_folder(tmp_path):
    (tmp_path / "results").mkdir()
    board = render_board(tmp_path / "results", tmp_path / "out")
    assert board.n_records == 0 and "No results yet" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from scifm.cli.main import main

    monkeypatch.setenv("SCIFM_REPO", str(REPO))
    assert main(["bench", "run", "nope", "--configs", str(REPO / "benchmarks" / "configs")]) == 2
    err = capsys.readouterr().err
    assert "no benchmark suite 'nope'" in err and "mlip" in err
    res = tmp_path / "r"
    res.mkdir()
    assert main(["bench", "board", "--results", str(res), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "index.html").is_file()


# --- headless Chromium ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium; apt-installed when running as root with CI=true or SCIFM_INSTALL_CHROMIUM=1."""
    if CHROMIUM.exists():
        return CHROMIUM
    wants = os.environ.get("CI", "").lower() == "true" or os.environ.get("SCIFM_INSTALL_CHROMIUM") == "1"
    if not wants:
        pytest.skip(
            "/usr/bin/chromium missing (apt-get install -y chromium, "
            "or run as root with SCIFM_INSTALL_CHROMIUM=1)"
        )
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("/usr/bin/chromium missing and cannot be installed here (needs root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"could not install chromium ({' '.join(cmd)} failed: {proc.stderr.strip()[-300:]})")
    if not CHROMIUM.exists():
        pytest.skip("apt-get installed chromium but /usr/bin/chromium is still missing")
    return CHROMIUM


def _browse(chromium: Path, page: Path, tmp: Path) -> dict:
    """Load ``page`` headless with every host name unresolvable; return the DOM, console lines and the
    URLs that the page (not the browser's own services) asked the network for."""
    netlog = tmp / "net.json"
    cmd = [
        str(chromium),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=3000",
        f"--log-net-log={netlog}",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln]
    requests = []
    if netlog.exists():
        text = netlog.read_text()
        if not text.rstrip().endswith("}"):  # the log may stop without its closing brackets
            text = text.rstrip().rstrip(",") + "]}"
        log = json.loads(text)
        start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        for e in log["events"]:
            p = e.get("params", {})
            # the browser's own update/time/account pings have no page origin; page loads do
            if e["type"] == start and "url" in p and p.get("initiator") != "not an origin":
                requests.append(p["url"])
    return {
        "dom": proc.stdout,
        "console": console,
        "remote": [u for u in requests if not re.match(r"(file|data|blob|chrome|about):", u)],
    }


def _attr(dom: str, name: str) -> str | None:
    m = re.search(rf'<html[^>]*\s{name}="([^"]*)"', dom)
    return m.group(1) if m else None


def test_index_html_in_headless_chromium(chromium, results, tmp_path):
    out = tmp_path / "board"
    render_board(results, out)
    seen = _browse(chromium, out / "index.html", tmp_path)
    dom = seen["dom"]
    assert _attr(dom, "data-ready") == "1", "the page's load handler did not run"
    n_img = int(_attr(dom, "data-images-total"))
    assert n_img == 2 + 1 + 2  # mlip plots, prose plot, the two summary plots
    assert _attr(dom, "data-images-loaded") == str(n_img), "an image did not load"
    assert _attr(dom, "data-external-requests") == "0"
    assert dom.count('<table class="board"') == 4 and "<th" in dom
    assert seen["console"] == [], seen["console"]
    assert seen["remote"] == []


def test_chromium_check_catches_errors_and_remote_requests(chromium, tmp_path):
    # The harness itself must be able to fail: a page with a JS error, a broken image and a remote image.
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="missing.png"><img src="https://example.org/x.png">'
        "<script>undefinedFunction();</script></body></html>"
    )
    seen = _browse(chromium, page, tmp_path)
    assert any("undefinedFunction" in ln for ln in seen["console"])
    assert seen["remote"] == ["https://example.org/x.png"]


# --- the quick MLIP suite (real training, ~1-2 min) ----------------------------------------------------


@pytest.mark.slow
def test_quick_mlip_suite(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scifm.cli.main",
            "bench",
            "run",
            "mlip",
            "--quick",
            "--results",
            str(tmp_path / "results"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp_path / "results" / "mlip").glob("quick-*.json")
    rec = read_record(path)
    (row,) = rec["rows"]
    assert row["model"] == "painn" and row["epochs"] == 2
    assert row["forces_mae_meV_per_A"] > 0 and row["steps_per_s"] > 0
    assert {Path(p).name for p in rec["plots"]} == {"painn-parity.png", "painn-learning_curve.png"}
    board = render_board(tmp_path / "results", tmp_path / "board")
    assert board.n_records == 1 and (tmp_path / "board" / "img" / "summary" / "mlip-pareto.png").is_file()


# --- the quick variants of the other suites (real runs of the benchmark scripts, ~0.5-2 min each) --------


def _shared_circuits() -> bool:
    env = os.environ.get("SCIFM_SHARED")
    base = Path(env) / "data" if env else REPO / ".." / "shared" / "data"
    return (base / "circuits" / "sky130").is_dir()


def _check_dpot(rows):
    assert {r["model"] for r in rows} >= {
        "DPOT (pre-trained on the mixture)",
        "FNO (this dataset only)",
        "DPOT from scratch",
    }
    assert len(rows) == 9 and all(0 < r["l2re"] < 10 for r in rows)


def _check_circuit(rows):
    assert [r["method"][:3] for r in rows] == ["(a)", "(b)", "(c)", "ref"]
    assert all(-10 < r["edge_r2"] <= 1 for r in rows) and rows[0]["seeds"] == "0"


def _check_prose(rows):
    # alanine dipeptide with the TarFlow and with the IC flow, then one zero-shot dipeptide: the
    # transferable flow's SNIS and SMC, and plain MD with as many force evaluations as each
    assert [r["task"] for r in rows][:2] == ["Ace-A-Nme"] * 2 and len(rows) == 6
    assert rows[1]["model"].startswith("IC flow") and all(r["task"].startswith("zero-shot") for r in rows[2:])
    assert [r["method"] for r in rows[2:]] == ["snis", "smc", "md", "md"]
    assert rows[4]["energy_evaluations"] == rows[2]["energy_evaluations"]
    assert rows[5]["energy_evaluations"] == rows[3]["energy_evaluations"]
    assert all(r["ess"] is None or 0 < r["ess"] <= 1 for r in rows)


QUICK = {  # suite -> (check of the rows, plot names it must copy)
    "dpot": (_check_dpot, {"dpot-pretrain_l2re.png", "dpot-loss_curves.png"}),
    "circuit": (_check_circuit, {"transfer-transfer_configs.png", "transfer-transfer_r2_per_design.png"}),
    "prose": (_check_prose, {"prose-ramachandran.png", "prose-energy_hist.png"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("suite", sorted(QUICK))
def test_quick_suite(suite, tmp_path):
    if suite == "circuit" and not _shared_circuits():
        pytest.skip("shared sky130 netlists not found (../shared/data/circuits or $SCIFM_SHARED)")
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scifm.cli.main",
            "bench",
            "run",
            suite,
            "--quick",
            "--results",
            str(tmp_path / "results"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp_path / "results" / suite).glob("*.json")
    rec = read_record(path)
    assert "quick" in rec["name"] and rec["config"]["quick"] is True
    check, plots = QUICK[suite]
    check(rec["rows"])
    assert plots <= {Path(p).name for p in rec["plots"]}
    assert all((path.parent / p).is_file() for p in rec["plots"])
    board = render_board(tmp_path / "results", tmp_path / "board")
    assert board.n_records == 1 and board.warnings == []
