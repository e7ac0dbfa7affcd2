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
    sampling: str = typer.Option(
        "poisson",
        "--sampling",
        help="participation: poisson; cyclic (with --bands, for dp-ftrl-*); or fixed (replace-one, RDP)",
    ),
    bands: int = typer.Option(
        1, "--bands", help="b for --sampling cyclic: round t samples band t mod b (amplified BandMF; BLT: q_b = 1)"
    ),
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
    from keyboard_fl.privacy.report import build_mechanism, participation_for, privacy_report

    try:
        mech = build_mechanism(
            mechanism,
            participation_for(sampling, sampling_prob, population, bands),
            rounds,
            clip_norm=clip_norm,
            noise_multiplier=noise_multiplier or 0.0,
            adaptive_clip_quantile=adaptive_clip_quantile,
            count_stddev=count_stddev,
        )
        _, rep = privacy_report(mech, rounds, delta, target_epsilon=target_epsilon, accountant=accountant)
    except ValueError as e:
        _fail(f"--mechanism {mechanism} --sampling {sampling}: {e}")
    console.print(_table(rep))


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
    "effective_noise_std_average",
    "bands",
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
