"""Tests for keyboard_fl.cli: the keyboard-fl command line (typer)."""

import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from keyboard_fl.cli import app
from keyboard_fl.privacy import calibrate_noise_multiplier, default_delta, epsilon

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _stderr(res):
    try:
        return res.stderr
    except ValueError:  # older click: stderr mixed into output
        return res.output


def _assert_user_error(res, *needles):
    assert res.exit_code == 2, res.output
    text = _stderr(res).strip()
    assert "Traceback" not in res.output and "Traceback" not in text
    assert text.startswith("error:") and len(text.splitlines()) == 1, text
    for n in needles:
        assert n in text, text


def test_train_tiny_writes_metrics(tmp_path):
    out = tmp_path / "run"
    res = _invoke("train", "--preset", "tiny", "--mode", "dp-fedavg", "--rounds", "2", "--out", out)
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["mode"] == "dp-fedavg" and m["rounds"] == 2
    assert m["epsilon"] == epsilon(m["noise_multiplier"], m["sampling_prob"], 2, m["delta"])
    assert "metrics.json" in res.output and "ε=" in res.output
    again = _invoke("train", "--preset", "tiny", "--mode", "dp-fedavg", "--rounds", "2", "--out", out)
    _assert_user_error(again, "already holds a finished run")


def test_evaluate_shows_quality_and_privacy(tiny_runs):
    res = _invoke("evaluate", tiny_runs["dp-fedavg"])
    assert res.exit_code == 0, res.output
    m = json.loads((tiny_runs["dp-fedavg"] / "metrics.json").read_text())
    assert "privacy:" in res.output and f"{m['epsilon']:.3f}" in res.output
    assert "per-user top-1" in res.output
    res = _invoke("evaluate", tiny_runs["central"])
    assert res.exit_code == 0 and "private" in res.output


def test_suggest_prints_a_strip(tiny_runs):
    res = _invoke("suggest", "--run", tiny_runs["dp-fedavg"], "see you to")
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[0]
    words = [w.strip() for w in first.split("|")]
    assert 1 <= len(words) <= 3 and all(w.startswith("to") for w in words)
    assert "ε=" in res.output
    res = _invoke("predict", "--run", tiny_runs["fedavg"], "--k", "2", "hello ")
    assert res.exit_code == 0 and "private" in res.output


def _table_value(output, key):
    m = re.search(rf"{key}\s*│\s*(\S+)", output)
    assert m, output
    return m.group(1)


def test_privacy_epsilon_for_a_noise_level():
    res = _invoke("privacy", "--q", "0.01", "--rounds", "100", "--noise-multiplier", "1.0", "--delta", "1e-5")
    assert res.exit_code == 0, res.output
    assert float(_table_value(res.output, "epsilon")) == pytest.approx(epsilon(1.0, 0.01, 100, 1e-5), rel=1e-3)


def test_privacy_calibrates_the_noise():
    res = _invoke(
        "privacy", "--clients-per-round", "10", "--population", "1000", "--rounds", "50", "--target-epsilon", "3"
    )
    assert res.exit_code == 0, res.output
    z = float(_table_value(res.output, "noise_multiplier"))
    assert z == pytest.approx(calibrate_noise_multiplier(3.0, 0.01, 50, default_delta(1000)), rel=1e-3)
    assert float(_table_value(res.output, "epsilon")) <= 3.0 + 1e-3


def test_privacy_per_mechanism_with_adaptive_clipping():
    args = ["privacy", "--clients-per-round", "64", "--population", "2000", "--rounds", "300", "-z", "1.0"]
    plain = _invoke(*args, "--clip-norm", "0.5")
    adaptive = _invoke(*args, "--clip-norm", "0.1", "--mechanism", "dp-fedavg", "--adaptive-clip-quantile", "0.5")
    assert plain.exit_code == 0 and adaptive.exit_code == 0, plain.output + adaptive.output
    eps = epsilon(1.0, 0.032, 300, default_delta(2000))
    assert (
        float(_table_value(plain.output, "epsilon"))
        == float(_table_value(adaptive.output, "epsilon"))
        == pytest.approx(eps, rel=1e-3)
    )
    assert float(_table_value(plain.output, "noise_std_sum")) == pytest.approx(0.5)
    z_sum = (1.0 - (2 * 3.2) ** -2) ** -0.5  # σ_b = 0.05 · 64
    assert float(_table_value(adaptive.output, "sum_noise_multiplier")) == pytest.approx(z_sum, rel=1e-3)
    assert "adaptive clipping" in adaptive.output
    res = _invoke(
        "privacy",
        "--q",
        "0.01",
        "--population",
        "1000",
        "--rounds",
        "10",
        "-z",
        "1",
        "--sampling",
        "fixed",
        "--accountant",
        "pld",
    )
    assert res.exit_code != 0 and "cannot account sampling='fixed'" in res.output
    res = _invoke(
        "privacy", "--q", "0.01", "--population", "1000", "--rounds", "10", "-z", "1", "--mechanism", "dp-xyz"
    )
    assert res.exit_code != 0 and "unknown 'dp-xyz'" in res.output


def test_privacy_correlated_noise_matches_the_training_mechanism():
    """``privacy`` for DP-FTRL answers with the z and ε training would use (same calibration, same event)."""
    from keyboard_fl.config import FederatedConfig
    from keyboard_fl.train.federated import resolve_dp

    fed = FederatedConfig(
        rounds=20, clients_per_round=50, target_epsilon=4.0, mechanism="dp-ftrl-bandmf", sampling="cyclic", bands=4
    )
    mech = resolve_dp(fed, 10_000, True).mechanism
    args = ["privacy", "--population", 10_000, "--clients-per-round", 50, "--rounds", 20]
    res = _invoke(*args, "--target-epsilon", 4, "--mechanism", "dp-ftrl-bandmf", "--sampling", "cyclic", "--bands", 4)
    assert res.exit_code == 0, res.output
    assert float(_table_value(res.output, "noise_multiplier")) == pytest.approx(mech.noise_multiplier, rel=1e-3)
    assert float(_table_value(res.output, "bands")) == 4
    assert float(_table_value(res.output, "sampling_prob")) == pytest.approx(4 * 50 / 10_000)
    eff = float(_table_value(res.output, "effective_noise_std_average"))
    assert 0 < eff < float(_table_value(res.output, "noise_std_average"))  # correlation lowers the running-sum error
    res = _invoke(*args, "-z", 1, "--bands", 4)
    assert res.exit_code != 0 and "bands=4 needs cyclic sampling" in res.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--out", "{tmp}/x", "--mode", "gossip", "--preset", "tiny"], "--mode"),
        (["train", "--out", "{tmp}/x", "--preset", "huge"], "--preset"),
        (
            ["train", "--out", "{tmp}/x", "--preset", "tiny", "--noise-multiplier", "1", "--target-epsilon", "2"],
            "not both",
        ),
        (["train", "--out", "{tmp}/x", "--preset", "tiny", "--clip-norm", "-1"], "clip_norm"),
        (["train", "--out", "{tmp}/x", "--preset", "tiny", "--target-epsilon", "0"], "target_epsilon"),
        (["train", "--out", "{tmp}/x", "--preset", "tiny", "--users", "0"], "--users"),
        (["main", "--out", "{tmp}/x", "--preset", "tiny", "--users", "-5"], "--users"),
        (["suggest", "--run", "{tmp}/missing", "hello"], "no finished run"),
        (["evaluate", "{tmp}/missing"], "not found"),
        (["privacy", "--rounds", "10", "--q", "0.1", "--delta", "1e-5"], "exactly one"),
        (["privacy", "--rounds", "10", "--noise-multiplier", "1", "--delta", "1e-5"], "--q"),
        (["privacy", "--rounds", "10", "--noise-multiplier", "1", "--q", "0.1"], "--delta"),
        (["privacy", "--rounds", "10", "--noise-multiplier", "1", "--q", "1.5", "--delta", "1e-5"], "1.5"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, args, needle):
    res = _invoke(*[a.format(tmp=tmp_path) for a in args])
    _assert_user_error(res, needle)


def test_users_flag_sets_the_population_size():
    from keyboard_fl.cli.common import _config

    assert _config("default", "dp-fedavg", 0).population.num_train_users >= 1_000_000
    cfg = _config("default", "dp-fedavg", 0, users=2_000_000, rounds=3)
    assert cfg.population.num_train_users == 2_000_000 and cfg.federated.rounds == 3
    assert _config("tiny", "central", 0, users=77).population.num_train_users == 77
    assert (
        _config("tiny", "central", 0, sets=["population.num_train_users=90"], users=77).population.num_train_users == 90
    )


def test_clients_per_round_above_population_is_a_user_error(tmp_path):
    res = _invoke("train", "--out", tmp_path / "x", "--preset", "tiny", "--clients-per-round", "100000")
    _assert_user_error(res, "clients_per_round")


def test_broken_run_config_is_a_user_error(tiny_runs, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(tiny_runs["dp-fedavg"], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["federated"]["bogus"] = 1
    (d / "config.json").write_text(json.dumps(cfg))
    _assert_user_error(_invoke("suggest", "--run", d, "hi"), "bogus")


def test_train_resume_finishes_an_interrupted_run(tiny_runs, tmp_path):
    """`train --resume` on a run killed after its last checkpoint gives the uninterrupted run's metrics."""
    import shutil

    src = tiny_runs["dp-fedavg"]
    d = tmp_path / "dp"
    shutil.copytree(src, d)
    shutil.rmtree(d / "model")
    (d / "metrics.json").unlink()
    res = _invoke("train", "--resume", "--preset", "tiny", "--mode", "dp-fedavg", "--out", d)
    assert res.exit_code == 0, res.output
    drop = lambda p: {k: v for k, v in json.loads((p / "metrics.json").read_text()).items() if k != "seconds"}
    assert drop(d) == drop(src)


def test_main_reuses_finished_runs_writes_summary_and_audits_canary_runs(tiny_runs, canary_run, tmp_path):
    """`keyboard-fl main` skips finished runs, tabulates all three and audits the ones trained with canaries."""
    out = tmp_path / "main"
    shutil.copytree(canary_run, out / "central")
    for mode in ("fedavg", "dp-fedavg"):
        shutil.copytree(tiny_runs[mode], out / mode)
    res = _invoke("main", "--preset", "tiny", "--out", out)
    assert res.exit_code == 0, res.output
    assert res.output.count("already trained") == 3
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"central", "fedavg", "dp-fedavg"}
    assert (
        summary["dp-fedavg"]["epsilon"] == json.loads((tiny_runs["dp-fedavg"] / "metrics.json").read_text())["epsilon"]
    )
    assert "Secret Sharer audit" in res.output
    assert "audit" in json.loads((out / "central" / "metrics.json").read_text())
    assert "audit" not in json.loads((out / "fedavg" / "metrics.json").read_text())  # trained without canaries
