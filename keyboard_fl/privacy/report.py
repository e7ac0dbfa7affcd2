"""Privacy without training: the noise a target ε needs, or the ε a noise level gives, per mechanism.

The answers of ``keyboard-fl privacy`` and notebook 03. Every figure comes from
the same constructors, calibration and accountant the training loop uses
(:func:`keyboard_fl.train.federated.resolve_dp`), so what is quoted here is what a
run with these settings records in its ``metrics.json``.
"""

from __future__ import annotations

from typing import Any

from keyboard_fl.fl.participation import CyclicPoisson
from keyboard_fl.privacy import correlated_noise as cn
from keyboard_fl.privacy.events import Participation
from keyboard_fl.privacy.mechanism import calibrate_mechanism, make_mechanism, mechanism_epsilon

__all__ = ["build_mechanism", "effective_noise_multiplier", "participation_for", "privacy_report"]


def participation_for(sampling: str, sampling_prob: float, population: int | None, bands: int = 1) -> Any:
    """The participation a mechanism assumes: cyclic bands (split from N, each Poisson-sampled), or one pool."""
    if sampling == "cyclic":
        if population is None:
            raise ValueError("cyclic sampling needs the population N (the bands split the N users)")
        return CyclicPoisson.for_cohort(population, bands, sampling_prob * population)
    if bands != 1:
        raise ValueError(f"bands={bands} needs cyclic sampling")
    return Participation(sampling, sampling_prob, population)


def build_mechanism(
    name: str,
    participation: Any,
    rounds: int,
    *,
    clip_norm: float,
    noise_multiplier: float = 0.0,
    adaptive_clip_quantile: float | None = None,
    count_stddev: float | None = None,
) -> Any:
    """The mechanism ``name``, uncalibrated (DP-FTRL's matrix is built for ``rounds``, as in training)."""
    return make_mechanism(
        name,
        clip_norm=clip_norm,
        noise_multiplier=noise_multiplier,
        participation=participation,
        adaptive_clip_quantile=adaptive_clip_quantile,
        adaptive_clip_count_stddev=count_stddev,
        **({"rounds": rounds} if name.startswith("dp-ftrl") else {}),
    )


def effective_noise_multiplier(mech: Any, rounds: int) -> float:
    """z of the independent noise whose error on the model's running sum equals this mechanism's.

    DP-FedAvg's own z; for correlated noise (DP-FTRL) the root-mean-square error of
    the noised prefix sums, divided by that of one independent draw per round.
    """
    if not hasattr(mech, "kind"):
        return float(mech.to_dict().get("sum_noise_multiplier", mech.noise_multiplier))
    prof = cn.noise_error_profile(mech.kind, mech._matrix_params(), rounds)
    return mech.noise_std / mech.clip_norm * cn.effective_iid_std(prof["prefix"])


def privacy_report(
    mech: Any,
    rounds: int,
    delta: float,
    *,
    target_epsilon: float | None = None,
    accountant: str | None = None,
) -> tuple[Any, dict]:
    """``mech`` (calibrated to ``target_epsilon`` when given) and its privacy and noise, as a flat dict."""
    if target_epsilon is not None:
        mech = calibrate_mechanism(mech, target_epsilon, rounds, delta, accountant=accountant)
    acc = accountant or mech.accountant
    rep: dict[str, Any] = {"epsilon": mechanism_epsilon(mech, rounds, delta, accountant=acc)}
    try:
        rep["epsilon_rdp"] = mechanism_epsilon(mech, rounds, delta, accountant="rdp")
    except ValueError:  # no RDP event for this mechanism
        pass
    d, p = mech.to_dict(), mech.participation
    rep.update(
        delta=delta,
        mechanism=f"{d['base']['name']} + adaptive clipping" if "base" in d else d["name"],
        noise_multiplier=mech.noise_multiplier,
    )
    if "sum_noise_multiplier" in d:
        rep.update(sum_noise_multiplier=d["sum_noise_multiplier"], count_stddev=d["count_stddev"])
    z_sum = d.get("sum_noise_multiplier", mech.noise_multiplier)
    rep["noise_std_sum"] = z_sum * mech.clip_norm
    if p.population is not None:
        rep["noise_std_average"] = z_sum * mech.clip_norm / mech.expected_cohort
        rep["effective_noise_std_average"] = (
            effective_noise_multiplier(mech, rounds) * mech.clip_norm / mech.expected_cohort
        )
    if hasattr(p, "num_bands"):
        rep["bands"] = p.num_bands
    rep.update(
        sampling_prob=p.sampling_prob,
        rounds=rounds,
        population=p.population,
        privacy_unit="user",
        accountant=acc,
        sampling=p.scheme,
        neighbouring=p.neighbouring,
    )
    return mech, rep
