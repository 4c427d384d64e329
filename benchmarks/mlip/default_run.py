"""The README's first command as a benchmark: `sci-fm train mlip` on the bundled GFN2-xTB set, timed.

Runs the default job (PaiNN, 40 epochs, bundled data split 80/10/10 by trajectory, seed 0) in a scratch
folder, or ingests a finished run with ``--from-run``, then copies metrics.json, parity.png and
learning_curve.png to ``benchmarks/results/mlip/default-run/`` and writes the record
``benchmarks/results/mlip/default-run.json`` (schema scifm-bench/1).

    uv run python benchmarks/mlip/default_run.py                 # ~4 minutes on 2 idle cores
    uv run python benchmarks/mlip/default_run.py --from-run runs/mlip --wall-time-s 235
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from scifm.bench.suites import load_suite
from scifm.core.provenance import provenance, write_record

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "benchmarks" / "results" / "mlip"
COMMAND = "uv run sci-fm train mlip"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from-run", type=Path, help="a finished `sci-fm train mlip` run directory")
    p.add_argument("--wall-time-s", type=float, help="whole-command wall time of --from-run (with start-up)")
    args = p.parse_args()
    if args.from_run is None:
        run = Path(tempfile.mkdtemp(prefix="scifm-default-run-")) / "run"
        t0 = time.perf_counter()
        subprocess.run(["sci-fm", "train", "mlip", "--out", str(run), "--no-progress"], check=True)
        wall = time.perf_counter() - t0
    else:
        run, wall = args.from_run, args.wall_time_s
    metrics = json.loads((run / "metrics.json").read_text())
    folder = OUT / "default-run"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.json", "parity.png", "learning_curve.png", "config.yaml"):
        shutil.copyfile(run / name, folder / name)
    columns = load_suite("mlip", REPO / "benchmarks" / "configs").columns
    row = {"model": metrics["model"], "dataset": "bundled GFN2-xTB (test split)"}
    row.update({k: metrics[k] for k in columns if k in metrics and not isinstance(metrics[k], dict | list)})
    if wall is not None:
        row["command_wall_time_s"] = round(float(wall), 1)
    cols = {k: v for k, v in columns.items() if k in row}
    cols["command_wall_time_s"] = {"better": "lower", "unit": "s", "label": "whole command"}
    prov = provenance(COMMAND, wall)
    write_record(
        OUT / "default-run.json",
        "mlip",
        "default-run",
        [row],
        cols,
        plots=["default-run/parity.png", "default-run/learning_curve.png"],
        config={
            "command": COMMAND,
            "run_config": "default-run/config.yaml",
            "sources": ["default-run/metrics.json"],
        },
        seed=0,
        title="The quick-start job: sci-fm train mlip (PaiNN, bundled data, defaults)",
        prov=prov,
    )
    print(f"wrote {OUT / 'default-run.json'}")


if __name__ == "__main__":
    main()
