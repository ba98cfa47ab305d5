"""Training of learned methods: the loop (:mod:`~emcore.train.loop`), its settings
(:mod:`~emcore.train.config`), losses, weights files, and the training-data sources
(simulated pairs, the physics set, pairs and frames of the user's data)."""

from emcore.train.config import TrainConfig, select_device
from emcore.train.loop import TrainResult, train
from emcore.train.losses import MSELoss, PoissonNLLLoss
from emcore.train.weights import load_weights, read_weights, save_weights

__all__ = ["MSELoss", "PoissonNLLLoss", "TrainConfig", "TrainResult", "load_weights", "read_weights", "save_weights",
           "select_device", "train"]
