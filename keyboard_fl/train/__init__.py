"""Training: the centralized baseline, the federated loop and the run orchestration."""

from keyboard_fl.train.central import CentralConfig, train_central

__all__ = ["CentralConfig", "train_central"]
