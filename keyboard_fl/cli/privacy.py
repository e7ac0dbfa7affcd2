"""``privacy``: ε for a noise level, or the noise for a target ε, without training."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from keyboard_fl.cli.common import _fail, _guard, app, console


@app.command()
@_guard
def privacy(
    sampling_prob: Optional[float] = typer.Option(None, "--q", help="Poisson sampling probability per round"),
    clients_per_round: Optional[float] = typer.Option(
        None, "--clients-per-round", help="expected cohort (with --population)"
    ),
    population: Optional[int] = typer.Option(None, "--population", help="number of users N"),
    rounds: int = typer.Option(..., help="training rounds"),
    noise_multiplier: Optional[float] = typer.Option(None, "--noise-multiplier", "-z", help="z: what ε does it give?"),
    target_epsilon: Optional[float] = typer.Option(None, "--target-epsilon", help="what z does this ε need?"),
    delta: Optional[float] = typer.Option(None, help="δ (default: below 1/N)"),
    mechanism: str = typer.Option(
        "dp-fedavg", "--mechanism", help="privacy mechanism (keyboard_fl.privacy.MECHANISMS)"
    ),
    sampling: str = typer.Option("poisson", "--sampling", help="participation: poisson, or fixed (replace-one, RDP)"),
    accountant: Optional[str] = typer.Option(None, "--accountant", help="pld or rdp (default: the mechanism's own)"),
    clip_norm: float = typer.Option(1.0, "--clip-norm", help="C: to show the noise std zC on the sum"),
    adaptive_clip_quantile: Optional[float] = typer.Option(
        None, "--adaptive-clip-quantile", help="with adaptive clipping: show the sum/count split of z"
    ),
    count_stddev: Optional[float] = typer.Option(
        None, "--count-stddev", help="adaptive clipping's count noise σ_b (default 0.05·qN)"
    ),
):
    """Privacy without training: ε for a noise level, or the noise for a target ε, for a mechanism (user-level)."""
    from keyboard_fl.privacy import default_delta

    if (noise_multiplier is None) == (target_epsilon is None):
        _fail("give exactly one of --noise-multiplier or --target-epsilon")
    if sampling_prob is None:
        if clients_per_round is None or population is None:
            _fail("give --q, or --clients-per-round with --population")
        sampling_prob = clients_per_round / population
    if delta is None:
        if population is None:
            _fail("give --delta, or --population to use the default δ below 1/N")
        delta = default_delta(population)
    if adaptive_clip_quantile is not None and population is None:
        _fail("adaptive clipping needs --population (its count noise and denominator are qN)")
    mech, acc, rep = _mechanism(
        mechanism,
        sampling,
        sampling_prob,
        population,
        rounds,
        delta,
        noise_multiplier,
        target_epsilon,
        accountant,
        clip_norm,
        adaptive_clip_quantile,
        count_stddev,
    )
    rep.update(_report(mech, acc, rounds, delta, population, clip_norm))
    console.print(_table(rep))


def _mechanism(
    mechanism,
    sampling,
    sampling_prob,
    population,
    rounds,
    delta,
    noise_multiplier,
    target_epsilon,
    accountant,
    clip_norm,
    adaptive_clip_quantile,
    count_stddev,
):
    """The mechanism (calibrated when a target ε is given), its accountant and ``{epsilon[, epsilon_rdp]}``."""
    from keyboard_fl.privacy import Participation, calibrate_mechanism, make_mechanism, mechanism_epsilon

    try:
        mech = make_mechanism(
            mechanism,
            clip_norm=clip_norm,
            noise_multiplier=noise_multiplier or 0.0,
            participation=Participation(sampling, sampling_prob, population),
            adaptive_clip_quantile=adaptive_clip_quantile,
            adaptive_clip_count_stddev=count_stddev,
        )
        if target_epsilon is not None:
            mech = calibrate_mechanism(mech, target_epsilon, rounds, delta, accountant=accountant)
        acc = accountant or mech.accountant
        rep = {"epsilon": mechanism_epsilon(mech, rounds, delta, accountant=acc)}
    except ValueError as e:
        _fail(f"--mechanism {mechanism} --sampling {sampling}: {e}")
    try:
        rep["epsilon_rdp"] = mechanism_epsilon(mech, rounds, delta, accountant="rdp")
    except ValueError:
        pass
    return mech, acc, rep


def _report(mech, acc: str, rounds: int, delta: float, population: Optional[int], clip_norm: float) -> dict:
    """The mechanism's noise, participation and accounting, as the rows of the privacy table."""
    d = mech.to_dict()
    p = mech.participation
    name = f"{d['base']['name']} + adaptive clipping" if "base" in d else d["name"]
    rep = dict(delta=delta, mechanism=name, noise_multiplier=mech.noise_multiplier)
    if "sum_noise_multiplier" in d:
        rep.update(sum_noise_multiplier=d["sum_noise_multiplier"], count_stddev=d["count_stddev"])
    z_sum = d.get("sum_noise_multiplier", mech.noise_multiplier)
    rep["noise_std_sum"] = z_sum * clip_norm
    if population is not None:
        rep["noise_std_average"] = z_sum * clip_norm / mech.expected_cohort
    rep.update(
        sampling_prob=p.sampling_prob,
        rounds=rounds,
        population=population,
        privacy_unit="user",
        accountant=acc,
        sampling=p.scheme,
        neighbouring=p.neighbouring,
    )
    return rep


REPORT_KEYS = (
    "epsilon",
    "epsilon_rdp",
    "delta",
    "mechanism",
    "noise_multiplier",
    "sum_noise_multiplier",
    "count_stddev",
    "noise_std_sum",
    "noise_std_average",
    "sampling_prob",
    "rounds",
    "population",
    "privacy_unit",
    "accountant",
    "sampling",
    "neighbouring",
)


def _table(rep: dict) -> Table:
    """The report as a two-column table, in REPORT_KEYS order (absent keys skipped)."""
    t = Table(title=f"user-level privacy: {rep['mechanism']}")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    for key in REPORT_KEYS:
        if key in rep:
            v = rep[key]
            t.add_row(key, f"{v:.4g}" if isinstance(v, float) else str(v))
    return t
