"""PubChemQCR: read the original LMDB shards, convert them, generate look-alike data, split, score, relax.

Public entry points (imported lazily by the CLI):

* ``reader.open_pubchemqcr(spec) -> list[ase.Atoms]`` and ``reader.open_spec(spec)`` (lazy frames) for
  ``pubchemqcr:PATH[?stage=1st&subset=1&split=train&energy=total]`` specs;
* ``reader.PubChemQCR`` (molecules), ``reader.PubChemQCRFrames`` (snapshots), ``reader.SkipReport``;
* ``convert.configure/run`` (``sci-fm convert pubchemqcr``), ``generate.configure/run``
  (``sci-fm data pubchemqcr``); ``splits.paper_split``, ``splits.read_split_file``; ``metrics``.
"""
