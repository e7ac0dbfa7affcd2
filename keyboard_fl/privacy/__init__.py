"""User-level differential privacy for DP-FedAvg: clipping, noise and accounting."""

from keyboard_fl.privacy.accounting import (
    ACCOUNTANTS,
    PLD_DISCRETIZATION,
    SAMPLINGS,
    PrivacyLedger,
    PrivacySpec,
    calibrate_noise_multiplier,
    default_delta,
    describe,
    dp_event,
    epsilon,
    epsilon_curve,
)
from keyboard_fl.privacy.clipping import add_gaussian_noise, clip_update

__all__ = [
    "add_gaussian_noise",
    "clip_update",
    "ACCOUNTANTS",
    "PLD_DISCRETIZATION",
    "SAMPLINGS",
    "PrivacyLedger",
    "PrivacySpec",
    "calibrate_noise_multiplier",
    "default_delta",
    "describe",
    "dp_event",
    "epsilon",
    "epsilon_curve",
]
