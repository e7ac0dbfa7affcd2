"""Tests for keyboard_fl.config: run configuration, validation, presets."""

import dataclasses
import json

import pytest

from keyboard_fl.config import MODES, PRESETS, EvalConfig, FederatedConfig, RunConfig, preset
from keyboard_fl.models import ModelConfig
from keyboard_fl.train.federated import resolve_dp


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("mode", MODES)
def test_presets_round_trip_through_json(name, mode):
    cfg = preset(name, mode=mode, seed=3)
    assert cfg.mode == mode and cfg.seed == 3 and cfg.population.seed == 3
    again = RunConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg


def test_load_round_trip(tmp_path):
    cfg = preset("tiny")
    p = tmp_path / "config.json"
    p.write_text(cfg.to_json())
    assert RunConfig.load(p) == cfg


def test_default_population_is_a_million_streamed_users():
    assert preset("default").population.num_train_users >= 1_000_000
    assert preset("tiny").population.num_train_users <= 1_000  # tiny stays tiny


def test_tiny_preset_is_consistent():
    cfg = preset("tiny")
    assert cfg.model.vocab_size == cfg.tokenizer.vocab_size
    q = cfg.federated.sampling_prob(cfg.population.num_train_users)
    assert 0 < q <= 1


def test_unknown_keys_rejected_with_path():
    with pytest.raises(ValueError, match=r"config: unknown key\(s\) sead"):
        RunConfig.from_dict({"sead": 1})
    with pytest.raises(ValueError, match=r"config\.federated: unknown key\(s\) roundz for FederatedConfig"):
        RunConfig.from_dict({"federated": {"roundz": 3}})
    with pytest.raises(ValueError, match=r"run\.json\.model: unknown key\(s\) layers"):
        RunConfig.from_dict({"model": {"layers": 3}}, where="run.json")
    with pytest.raises(ValueError, match=r"config\.population: expected an object"):
        RunConfig.from_dict({"population": 5})


def test_invalid_values_in_dict_name_the_path():
    with pytest.raises(ValueError, match=r"config\.federated: .*clip_norm must be > 0"):
        RunConfig.from_dict({"federated": {"clip_norm": -1.0}})
    with pytest.raises(ValueError, match=r"config: mode must be one of"):
        RunConfig.from_dict({"mode": "gossip"})
    with pytest.raises(ValueError, match=r"config\.model: .*kind"):
        RunConfig.from_dict({"model": {"kind": "rnn"}})


def test_invalid_json_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"seed": 1,\n "mode": }')
    with pytest.raises(ValueError, match=r"bad\.json: line 2: invalid JSON"):
        RunConfig.load(p)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"clip_norm": -0.1}, "clip_norm"),
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"clip_norm": float("nan")}, "clip_norm"),
        ({"target_epsilon": 0.0}, "target_epsilon"),
        ({"target_epsilon": -1.0}, "target_epsilon"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"rounds": 0}, "rounds"),
        ({"clients_per_round": 0}, "clients_per_round"),
        ({"batch_size": -2}, "batch_size"),
        ({"server_optimizer": "lbfgs"}, "server_optimizer"),
    ],
)
def test_invalid_federated_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FederatedConfig(**kwargs)


def test_sampling_prob_above_one_rejected():
    cfg = FederatedConfig(clients_per_round=500)
    assert cfg.sampling_prob(1000) == 0.5
    assert cfg.sampling_prob(500) == 1.0
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        cfg.sampling_prob(300)
    with pytest.raises(ValueError, match="clients_per_round=500"):
        resolve_dp(cfg, 300, private=True)


def test_run_config_validation():
    with pytest.raises(ValueError, match="mode"):
        RunConfig(mode="federated")
    with pytest.raises(ValueError, match="seq_len"):
        RunConfig(seq_len=0)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_resolve_dp_calibrates_or_uses_z():
    from keyboard_fl.privacy import default_delta, epsilon

    cfg = FederatedConfig(rounds=20, clients_per_round=10, target_epsilon=5.0)
    dp = resolve_dp(cfg, 1000, private=True)
    assert dp.sampling_prob == 0.01 and dp.delta == default_delta(1000) and dp.population == 1000
    eps = epsilon(dp.noise_multiplier, dp.sampling_prob, 20, dp.delta)
    assert eps <= 5.0 and eps > 4.0
    fixed = resolve_dp(dataclasses.replace(cfg, noise_multiplier=1.1), 1000, private=True)
    assert fixed.noise_multiplier == 1.1
    nodp = resolve_dp(cfg, 1000, private=False)
    assert nodp.noise_multiplier == 0.0
    with pytest.raises(ValueError, match="noise_multiplier or a target_epsilon"):
        resolve_dp(dataclasses.replace(cfg, target_epsilon=None), 1000, private=True)


def test_eval_and_model_defaults_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        EvalConfig().max_users = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().vocab_size = 3
