"""The core trainer: `Task` (a LightningModule around a plain model), `fit`, weight EMA, seeding.

from scifm.core.train import Task, fit, EMA, seed_everything, read_metrics_csv
"""

from scifm.core.train.callbacks import read_metrics_csv
from scifm.core.train.ema import EMA
from scifm.core.train.fit import fit, seed_everything
from scifm.core.train.task import Task

__all__ = ["EMA", "Task", "fit", "read_metrics_csv", "seed_everything"]
