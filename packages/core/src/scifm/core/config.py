"""YAML configs whose keys map one-to-one onto CLI flags.

Precedence: parser defaults < ``--config`` file < flags given on the command line. Unknown keys are errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from scifm.core.errors import ConfigError

# Flags that steer the CLI itself and never come from a config file.
RESERVED = {"config", "print_config", "debug", "func", "verb", "noun"}


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def explicit_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations that the user set on the command line (not defaults)."""
    shadow = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:  # noqa: SLF001 - argparse has no public API for this
        if not action.option_strings or action.dest == "help":
            continue
        kwargs: dict[str, Any] = {"dest": action.dest, "default": argparse.SUPPRESS}
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):  # noqa: SLF001
            kwargs["action"] = "store_const"
            kwargs["const"] = True
        elif action.nargs is not None:
            kwargs["nargs"] = action.nargs
        shadow.add_argument(*action.option_strings, **kwargs)
    ns, _ = shadow.parse_known_args(argv)
    return set(vars(ns))


def resolve(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """Merge ``args.config`` (if any) into ``args``; explicit flags win. Unknown keys raise ConfigError."""
    cfg_path = getattr(args, "config", None)
    if not cfg_path:
        return args
    values = load_yaml(cfg_path)
    known = {a.dest for a in parser._actions if a.dest not in ("help",)} - RESERVED  # noqa: SLF001
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{cfg_path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
        )
    given = explicit_dests(parser, argv)
    for key, value in values.items():
        if key not in given:
            setattr(args, key, value)
    return args


def to_dict(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved config as plain data (what ``--print-config`` shows and runs save)."""
    out = {}
    for k, v in vars(args).items():
        if k in RESERVED or callable(v):
            continue
        out[k] = str(v) if isinstance(v, Path) else v
    return out


def dump(args: argparse.Namespace, stream=None) -> None:
    yaml.safe_dump(to_dict(args), stream or sys.stdout, sort_keys=True)
