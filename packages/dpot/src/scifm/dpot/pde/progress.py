"""A tqdm progress bar that can be switched off (tests, quiet runs)."""

from __future__ import annotations

import contextlib

from tqdm.auto import tqdm


@contextlib.contextmanager
def bar(total: int, desc: str, unit: str = "it", enabled: bool = True):
    pb = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, leave=False)
    try:
        yield pb
    finally:
        pb.close()


class Scaled:
    """Advance a trajectory-frame bar by the batch size each time a batched solver finishes a frame."""

    def __init__(self, pb, k: int):
        self.pb, self.k = pb, k

    def update(self, n: int) -> None:
        self.pb.update(n * self.k)
