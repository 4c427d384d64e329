"""``sci-fm``: one command tree; each domain package registers its own sub-commands."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import warnings

from scifm.core import config as cfg
from scifm.core.cli import CommandTree
from scifm.core.errors import SciFMError

# Domain modules that expose ``register(tree)``. A domain whose import fails is reported, not fatal.
DOMAINS = (
    "scifm.mlip.cli",
    "scifm.prose.cli",
    "scifm.dpot.cli",
    "scifm.circuitgcl.cli",
    "scifm.md.cli",
    "scifm.bench.cli",
)


def build_tree() -> CommandTree:
    tree = CommandTree()
    for name in DOMAINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # the domain has no CLI yet
                continue
            raise
        module.register(tree)
    return tree


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file whose keys are this command's options (flags override it)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")


def build_parser(tree: CommandTree) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sci-fm", description="Scientific foundation models.")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")
    verbs.required = True
    groups: dict[str, argparse._SubParsersAction] = {}
    for c in tree.commands:
        if c.noun is None:
            p = verbs.add_parser(c.verb, help=c.help, description=c.help)
        else:
            if c.verb not in groups:
                vp = verbs.add_parser(c.verb, help=f"{c.verb} ...")
                groups[c.verb] = vp.add_subparsers(dest="noun", metavar="TARGET")
                groups[c.verb].required = True
            p = groups[c.verb].add_parser(c.noun, help=c.help, description=c.help)
        c.configure(p)
        _common(p)
        p.set_defaults(func=c.run, _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    # e3nn still calls torch.jit.script at import; the deprecation notice is noise for users.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SCIFM_DEBUG") == "1"
    try:
        tree = build_tree()
        parser = build_parser(tree)
        args = parser.parse_args(argv)
        sub = args._parser
        del args._parser
        args = cfg.resolve(sub, args, argv)
        if args.print_config:
            cfg.dump(args)
            return 0
        result = args.func(args)
        return int(result) if isinstance(result, int) else 0
    except SciFMError as exc:
        if debug:
            traceback.print_exc()
        print(f"sci-fm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sci-fm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
