"""Shared core: atomic graphs, neighbour lists, layers, trainer, data specs, safe I/O."""
