"""Privacy accounting for user-level DP, split by concept (kept as one import path).

- :mod:`keyboard_fl.privacy.events`: participation and DpEvent construction;
- :mod:`keyboard_fl.privacy.accountant`: ε of an event (PLD, RDP cross-check), δ;
- :mod:`keyboard_fl.privacy.calibration`: the smallest z for a target ε;
- :mod:`keyboard_fl.privacy.ledger`: per-run, serialisable, in checkpoints;
- :mod:`keyboard_fl.privacy.mechanism`: the mechanisms that own z, C and q.
"""

from keyboard_fl.privacy.accountant import (
    ACCOUNTANTS,
    PLD_DISCRETIZATION,
    _epsilon_cached,  # noqa: F401 (the cache, for tests)
    default_delta,
    describe,
    epsilon,
    epsilon_curve,
    event_epsilon,
)
from keyboard_fl.privacy.calibration import calibrate, calibrate_noise_multiplier
from keyboard_fl.privacy.events import SAMPLINGS, SCHEMES, Participation, PrivacySpec, dp_event
from keyboard_fl.privacy.ledger import PrivacyLedger

__all__ = [
    "ACCOUNTANTS",
    "PLD_DISCRETIZATION",
    "SAMPLINGS",
    "SCHEMES",
    "Participation",
    "PrivacyLedger",
    "PrivacySpec",
    "calibrate",
    "calibrate_noise_multiplier",
    "default_delta",
    "describe",
    "dp_event",
    "epsilon",
    "epsilon_curve",
    "event_epsilon",
]
