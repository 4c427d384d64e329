import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def make_file(tmp_path):
    """Write a small spec file: ``make_file(name, shape, channels=None, fill=None) -> path``."""
    from scifm.dpot.data import write_pde

    def make(name, shape, channels=None, fill=None, seed=0):
        data = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) if fill is None else fill
        c = shape[-1]
        dims = len(shape) - 3
        path = tmp_path / name
        write_pde(
            path,
            data,
            equation="test",
            parameters={"a": 1},
            dx=[0.1] * dims,
            dt=0.5,
            channels=channels or [f"c{i}" for i in range(c)],
            boundary="periodic",
            generator_version="test/1",
        )
        return path

    return make
