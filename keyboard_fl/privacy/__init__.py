"""User-level differential privacy for DP-FedAvg: clipping, noise and accounting.

The accounting names are imported on first use (PEP 562): ``dp_accounting``
pulls in most of scipy (~1–2 s), which a device-side process that only clips
(e.g. a Flower ClientApp, started afresh for every message) never needs.
"""

from keyboard_fl.privacy.clipping import add_gaussian_noise, clip_update

_ACCOUNTING = (
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
)

__all__ = ["add_gaussian_noise", "clip_update", *_ACCOUNTING]


def __getattr__(name: str):
    if name in _ACCOUNTING:
        from keyboard_fl.privacy import accounting

        return getattr(accounting, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ACCOUNTING))
