"""Issue-3 tables from the newest records in benchmarks/results/mlip/: accuracy vs MACE, MD speed vs MACE,
NVE drift. Ratios are ours / MACE's (forces: lower is better, so a ratio <= 1 meets the target; speed: higher
is better, so a ratio >= 1 meets it).

    uv run python benchmarks/mlip/tables.py            # prints markdown, writes results/mlip/tables.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def newest(folder: Path, prefix: str) -> dict | None:
    """The newest record ``<prefix>-<UTC stamp>.json`` (stamps sort as text)."""
    files = sorted(p for p in folder.glob(f"{prefix}-2*.json"))
    return json.loads(files[-1].read_text()) if files else None


def mace_by(rows: list[dict], key: str) -> dict:
    """MACE's rows of a record by molecule or system (``key``)."""
    return {r[key]: r for r in rows if r["model"] == "mace"}


def accuracy_table(rec: dict, mace_elsewhere: dict | None = None) -> str:
    """One row per training. ``mace_elsewhere``: MACE rows by molecule from another record on the same data
    (a probe record run with --no-mace); such ratios are marked with *. Probe rows show their recipe."""
    rows = rec["rows"]
    mace = mace_by(rows, "molecule")
    probe = any("variant" in r for r in rows)
    head = "| molecule | model | " + ("variant | recipe | " if probe else "")
    out = [
        head + "params | epochs | train time (s) | E MAE (meV/mol) | F MAE (meV/Å) | F MAE / MACE "
        "| target F ≤ MACE |",
        "|---|---|" + ("---|---|" if probe else "") + "---|---|---|---|---|---|---|",
    ]
    variants = rec.get("config", {}).get("variants", {})
    for r in rows:
        m, mark = mace.get(r["molecule"]), ""
        if m is None and mace_elsewhere and r["model"] != "mace":
            m, mark = mace_elsewhere.get(r["molecule"]), "*"
        ratio = r["forces_mae_meV_per_A"] / m["forces_mae_meV_per_A"] if m else None
        target = (
            ""
            if r["model"] not in ("bamboo", "nequip") or ratio is None
            else ("met" if ratio <= 1.0 else "not met")
        )
        params = r.get("n_parameters")
        extra = ""
        if probe:
            v = variants.get(r.get("variant"), {})
            recipe = r.get("variant_args", "") + (
                f" config {json.dumps(v['config'])}" if "config" in v else ""
            )
            extra = f"{r.get('variant', '-')} | {recipe.strip() or 'shared'} | "
        n_par = params if params is not None else "-"
        out.append(
            f"| {r['molecule']} | {r['model']} | {extra}{n_par} | {r['epochs']} "
            f"| {r['train_time_s']:.0f} | {r['energy_mae_meV']:.1f} | {r['forces_mae_meV_per_A']:.1f} "
            f"| {f'{ratio:.2f}{mark}' if ratio is not None else '-'} | {target} |"
        )
    return "\n".join(out)


def speed_table(rec: dict) -> str:
    rows = rec["rows"]
    mace = mace_by(rows, "system")
    out = [
        "| system | atoms | model | params | MD steps/s | / MACE | NL (ms) | forward (ms) | backward (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v, fmt=".1f"):
        return "-" if v is None else format(v, fmt)

    for r in sorted(rows, key=lambda r: (r["n_atoms"], r["model"])):
        m = mace.get(r["system"])
        ratio = r["steps_per_s"] / m["steps_per_s"] if m and r["model"] != "mace" else None
        out.append(
            f"| {r['system']} | {r['n_atoms']} | {r['model']} | {r.get('n_parameters') or '-'} "
            f"| {r['steps_per_s']:.2f} | {f(ratio, '.2f')} | {f(r.get('nl_ms'))} | {f(r.get('forward_ms'))} "
            f"| {f(r.get('backward_ms'))} |"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "mlip"))
    args = p.parse_args(argv)
    folder = Path(args.results)
    parts = []
    acc = newest(folder, "rmd17-compare")
    if acc:
        c = acc["config"]
        parts += [
            "## Accuracy (rMD17-like GFN2-xTB data, test frames later in time than training frames)",
            "",
            f"{c['epochs']} epochs for every model, batch {c['batch_size']}, {c['device']}, "
            f"{c['threads']} thread(s) per training; command: `{acc['provenance'].get('command', '')}`. "
            "Results are cached per molecule and model, so a row keeps the wall time of the run that trained "
            "it; these ran two to four trainings at once on a 2-core machine, so compare train times within "
            "a molecule only roughly.",
            "",
            accuracy_table(acc),
            "",
        ]
    mace_rows = mace_by(acc["rows"], "molecule") if acc else {}
    for path in sorted(folder.glob("rmd17-probe-2*.json")):
        probe = json.loads(path.read_text())
        parts += [
            f"## Recipe probe `{path.name}`",
            "",
            f"{probe['config']['epochs']} epochs, shared batch {probe['config']['batch_size']}; a variant's "
            "recipe is the extra `sci-fm train mlip` arguments (appended last, so they override the shared "
            "ones) or its model config. Ratios marked * use MACE from the accuracy record above (same data, "
            f"MACE not retrained in this run). Command: `{probe['provenance'].get('command', '')}`",
            "",
            accuracy_table(probe, mace_rows),
            "",
        ]
    speed = newest(folder, "md-speed")
    if speed:
        c = speed["config"]
        parts += [
            "## MD speed through the ASE calculator (float32, neighbour list every step)",
            "",
            f"{c['threads']} threads, {c['device']}; steps timed: {c['steps']}",
            "",
            speed_table(speed),
            "",
        ]
    nve = newest(folder, "nve-drift")
    if nve:
        parts += ["## NVE energy conservation (float64)", ""]
        for r in nve["rows"]:
            parts.append("- " + ", ".join(f"{k}: {v}" for k, v in r.items()))
        parts.append("")
    text = "\n".join(parts)
    (folder / "tables.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
