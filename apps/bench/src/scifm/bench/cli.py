"""Bench commands: ``bench run SUITE [--quick]`` and ``bench board [--out DIR]``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from scifm.core.cli import CommandTree


def _paths(args) -> tuple[Path, Path, Path]:
    from .runner import find_repo

    repo = find_repo()
    configs = Path(args.configs) if getattr(args, "configs", None) else repo / "benchmarks" / "configs"
    results = Path(args.results) if args.results else repo / "benchmarks" / "results"
    return repo, configs, results


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="suite name: a config benchmarks/configs/SUITE.yaml (mlip, dpot, ...)")
    p.add_argument("--quick", action="store_true", help="the suite's quick variant (a few minutes on a CPU)")
    p.add_argument("--seed", type=int, default=None, help="override the suite's seed")
    p.add_argument("--configs", default=None, help="folder of suite configs (default: benchmarks/configs)")
    p.add_argument("--results", default=None, help="results folder (default: benchmarks/results)")
    p.add_argument("--workdir", default=None, help="keep the jobs' run folders here (default: a temp folder)")
    p.add_argument("--keep-workdir", action="store_true", help="do not delete the temporary run folders")


def _run(args) -> int:
    from .runner import run_suite

    repo, configs, results = _paths(args)
    command = "sci-fm " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    path = run_suite(
        args.suite,
        configs,
        results,
        repo,
        quick=args.quick,
        seed=args.seed,
        workdir=Path(args.workdir) if args.workdir else None,
        keep=args.keep_workdir,
        command=command or f"sci-fm bench run {args.suite}" + (" --quick" if args.quick else ""),
    )
    print(f"result written to {path}")
    return 0


def _board_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default=None, help="results folder (default: benchmarks/results)")
    p.add_argument("--out", default=None, help="output folder (default: benchmarks/leaderboard)")


def _board(args) -> int:
    from .board import render_board

    repo, _, results = _paths(args)
    out = Path(args.out) if args.out else repo / "benchmarks" / "leaderboard"
    board = render_board(results, out)
    for w in board.warnings:
        print(f"sci-fm bench board: warning: {w}", file=sys.stderr)
    print(
        f"{board.n_records} record(s) in {len(board.suites)} suite(s) -> {out / 'leaderboard.md'}, "
        f"{out / 'index.html'}" + (f" ({len(board.warnings)} file(s) skipped)" if board.warnings else "")
    )
    return 0


def register(tree: CommandTree) -> None:
    tree.add("bench", "run", _run_args, _run, help="run a benchmark suite and append its result record")
    tree.add("bench", "board", _board_args, _board, help="render the leaderboard (Markdown + static HTML)")
