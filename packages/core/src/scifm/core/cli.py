"""The command tree that every domain package registers into.

A domain exposes ``register(tree: CommandTree)`` in ``scifm.<domain>.cli`` and adds commands such as
``tree.add("train", "mlip", configure=add_args, run=main, help=...)``. The ``sci-fm`` app builds argparse
from the tree; ``--config FILE.yaml`` values sit between the defaults and explicit flags.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], object]


def lazy_command(module: str) -> tuple[Configure, Run]:
    """configure/run pair of ``module`` (which defines both) that imports it only when the command is used,
    so that ``sci-fm --help`` stays fast."""
    import importlib

    def configure(p: argparse.ArgumentParser) -> None:
        importlib.import_module(module).configure(p)

    def run(args: argparse.Namespace) -> object:
        return importlib.import_module(module).run(args)

    return configure, run


@dataclass
class Command:
    verb: str
    noun: str | None
    configure: Configure
    run: Run
    help: str = ""


@dataclass
class CommandTree:
    commands: list[Command] = field(default_factory=list)

    def add(self, verb: str, noun: str | None, configure: Configure, run: Run, help: str = "") -> None:
        """Register ``sci-fm VERB [NOUN]``. ``noun=None`` makes a single-level command (``sci-fm md``)."""
        for c in self.commands:
            if c.verb == verb and c.noun == noun:
                raise ValueError(f"command 'sci-fm {verb} {noun or ''}' registered twice")
        self.commands.append(Command(verb, noun, configure, run, help))
