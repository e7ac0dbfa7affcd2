"""Tests for keyboard_fl.overrides: partial JSON configs and --set overrides, type-checked."""

import json

import pytest

from keyboard_fl.config import RunConfig, preset
from keyboard_fl.overrides import ConfigError, apply_sets, load_json, merge_json, resolve


def test_set_reaches_any_nested_field():
    cfg = apply_sets(
        preset("tiny"),
        [
            "federated.local_epochs=2",
            "population.num_train_users=500",
            "model.hidden_dim=32",
            "federated.server_optimizer=nesterov",
            "federated.client_lr=0.5",
            "mode=fedavg",
            "seq_len=12",
        ],
    )
    assert cfg.federated.local_epochs == 2 and cfg.population.num_train_users == 500
    assert cfg.model.hidden_dim == 32 and cfg.federated.server_optimizer == "nesterov"
    assert cfg.federated.client_lr == 0.5 and isinstance(cfg.federated.client_lr, float)
    assert cfg.mode == "fedavg" and cfg.seq_len == 12
    assert cfg.federated.rounds == preset("tiny").federated.rounds  # untouched fields keep the preset's value


def test_set_null_bool_tuple_and_optional_section():
    base = preset("tiny")
    assert base.canaries is None
    cfg = apply_sets(
        base,
        [
            "federated.target_epsilon=null",
            "federated.noise_multiplier=0.3",
            "canaries.repetitions=1,10",
            "canaries.spell=false",
        ],
    )
    assert cfg.federated.target_epsilon is None and cfg.federated.noise_multiplier == 0.3
    assert cfg.canaries.repetitions == (1, 10) and cfg.canaries.spell is False
    assert cfg.canaries.digits == 4  # the absent section starts from its defaults
    assert apply_sets(cfg, ["canaries=null"]).canaries is None
    assert apply_sets(base, ["canaries.repetitions=[2, 3]"]).canaries.repetitions == (2, 3)


@pytest.mark.parametrize(
    "assignment, needle",
    [
        ("federated.local_epoch=2", "unknown field federated.local_epoch (did you mean local_epochs?)"),
        ("federatd.rounds=3", "unknown field federatd (did you mean federated?)"),
        ("federated.local_epochs=2.5", "federated.local_epochs: expected int, got 2.5"),
        ("federated.local_epochs=true", "federated.local_epochs: expected int"),
        ("federated.client_lr=fast", "federated.client_lr: expected float"),
        ("federated.client_lr=nan", "federated.client_lr: expected float"),
        ("federated.server_optimizer=adamw", 'must be one of "sgd" | "nesterov" | "adam"'),
        ("federated.rounds=null", "federated.rounds: expected int"),
        ("federated.local_epochs=0", "local_epochs must be > 0"),
        ("canaries.spell=maybe", "canaries.spell: expected true or false"),
        ("federated=3", "federated is a section"),
        ("federated.rounds.max=3", "federated.rounds is a value, not a section"),
        ("federated.rounds", "expected section.field=value"),
    ],
)
def test_bad_set_names_the_field(assignment, needle):
    with pytest.raises(ConfigError) as e:
        apply_sets(preset("tiny"), [assignment])
    assert needle in str(e.value) and str(e.value).startswith(f"--set {assignment}: ")


def test_partial_json_merges_over_the_preset_and_full_json_round_trips(tmp_path):
    cfg = merge_json(preset("tiny"), {"federated": {"rounds": 4}, "canaries": {"digits": 5}})
    assert cfg.federated.rounds == 4 and cfg.federated.clients_per_round == 12 and cfg.canaries.digits == 5
    full = preset("default", mode="fedavg", seed=3)
    path = tmp_path / "full.json"
    path.write_text(full.to_json())
    assert resolve(preset("tiny"), config_file=path) == full
    assert RunConfig.from_dict(json.loads(path.read_text())) == full


def test_bad_json_config_names_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "federated": {"rounds": 4,}\n}\n')
    with pytest.raises(ConfigError, match=r"bad\.json: line 2: invalid JSON"):
        load_json(bad)
    typed = tmp_path / "typed.json"
    typed.write_text('{"federated": {"rounds": "4"}}')
    with pytest.raises(ConfigError, match=r"typed\.json: federated\.rounds: expected int, got \"4\""):
        resolve(preset("tiny"), config_file=typed)
    typo = tmp_path / "typo.json"
    typo.write_text('{"federatd": {}}')
    with pytest.raises(ConfigError, match=r"unknown field federatd \(did you mean federated\?\)"):
        resolve(preset("tiny"), config_file=typo)
    typo.write_text("[1]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_json(typo)
    with pytest.raises(ConfigError, match="no such file"):
        load_json(tmp_path / "missing.json")


def test_set_applies_after_the_config_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"federated": {"rounds": 4, "batch_size": 4}}')
    cfg = resolve(preset("tiny"), config_file=path, sets=["federated.rounds=5"])
    assert cfg.federated.rounds == 5 and cfg.federated.batch_size == 4
