"""keyboard-fl train/config with --config FILE.json and --set section.field=value (issue 19)."""

import json

from typer.testing import CliRunner

from keyboard_fl.cli import app
from keyboard_fl.config import RunConfig, preset

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    text = res.stderr.strip()
    assert "Traceback" not in res.output and text.startswith("error:") and len(text.splitlines()) == 1, text
    return text


def test_train_records_a_set_field_in_config_json(tmp_path):
    out = tmp_path / "run"
    res = _invoke(
        "train",
        "--preset",
        "tiny",
        "--mode",
        "fedavg",
        "--rounds",
        "2",
        "--set",
        "federated.local_epochs=2",
        "--set",
        "model.hidden_dim=48",
        "--out",
        out,
    )
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["federated"]["local_epochs"] == 2 and saved["model"]["hidden_dim"] == 48
    assert saved["federated"]["rounds"] == 2  # the dedicated flag still applies
    assert json.loads((out / "metrics.json").read_text())["mode"] == "fedavg"


def test_train_misspelt_field_exits_2_naming_it(tmp_path):
    out = tmp_path / "run"
    res = _invoke("train", "--preset", "tiny", "--set", "federated.local_epoch=2", "--out", out)
    text = _one_line_error(res)
    assert "unknown field federated.local_epoch (did you mean local_epochs?)" in text
    assert not out.exists()  # refused before anything was written
    res = _invoke("train", "--preset", "tiny", "--set", "federated.server_optimizer=adamw", "--out", out)
    assert "federated.server_optimizer" in _one_line_error(res)


def test_config_prints_the_resolved_configuration(tmp_path):
    res = _invoke(
        "config",
        "--preset",
        "default",
        "--mode",
        "fedavg",
        "--set",
        "federated.server_optimizer=nesterov",
        "--set",
        "federated.server_lr=1.0",
        "--set",
        "population.num_train_users=2000",
    )
    assert res.exit_code == 0, res.output
    cfg = RunConfig.from_dict(json.loads(res.stdout))
    base = preset("default", mode="fedavg")
    assert cfg.mode == "fedavg" and cfg.federated.server_optimizer == "nesterov" and cfg.federated.server_lr == 1.0
    assert cfg.population.num_train_users == 2000 and cfg.model == base.model
    # a partial file, then --set over it; its output is itself a valid --config file
    part = tmp_path / "sweep.json"
    part.write_text('{"federated": {"local_epochs": 3, "batch_size": 4}, "canaries": {"digits": 5}}')
    res = _invoke("config", "--preset", "tiny", "--config", part, "--set", "federated.batch_size=2")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["federated"]["local_epochs"] == 3 and d["federated"]["batch_size"] == 2 and d["canaries"]["digits"] == 5
    full = tmp_path / "full.json"
    full.write_text(res.stdout)
    again = _invoke("config", "--preset", "large", "--config", full)
    assert json.loads(again.stdout) == d


def test_config_file_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"federated": {"rounds": "many"}}')
    text = _one_line_error(_invoke("config", "--preset", "tiny", "--config", bad))
    assert "bad.json" in text and "federated.rounds: expected int" in text
    bad.write_text('{\n"federated": {\n"rounds": 3,\n}}')
    assert "bad.json: line 4: invalid JSON" in _one_line_error(_invoke("config", "--config", bad))
