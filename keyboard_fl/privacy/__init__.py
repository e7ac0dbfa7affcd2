"""User-level differential privacy: clipping, noise, mechanisms and accounting.

Clipping and noise are imported eagerly; everything that pulls in
``dp_accounting`` (most of scipy, ~1–2 s) is imported on first use (PEP 562),
so a device-side process that only clips (a Flower ClientApp) never pays for it.
"""

import importlib

from keyboard_fl.privacy.clipping import add_gaussian_noise, clip_update

_LAZY = {
    "accountant": (
        "ACCOUNTANTS",
        "PLD_DISCRETIZATION",
        "default_delta",
        "describe",
        "epsilon",
        "epsilon_curve",
        "event_epsilon",
    ),
    "calibration": ("calibrate", "calibrate_noise_multiplier"),
    "events": ("SAMPLINGS", "SCHEMES", "Participation", "PrivacySpec", "dp_event", "gaussian_round_event"),
    "ledger": ("PrivacyLedger",),
    "mechanism": (
        "MECHANISMS",
        "AdaptiveClipping",
        "ClipStats",
        "DpFedAvg",
        "Mechanism",
        "calibrate_mechanism",
        "make_mechanism",
        "mechanism_epsilon",
        "mechanism_from_dict",
        "register_mechanism",
    ),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["add_gaussian_noise", "clip_update", *_WHERE]  # noqa: PLE0604 (names of the lazy table)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"keyboard_fl.privacy.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
