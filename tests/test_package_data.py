"""Package data is found through importlib.resources, not paths relative to the checkout (issue 19)."""

from pathlib import Path

import pytest

from keyboard_fl.package_data import package_dir


def test_shipped_directories_resolve_inside_the_package():
    import keyboard_fl
    from keyboard_fl.data import DEFAULT_LANG_DIR
    from keyboard_fl.demo.app import STATIC
    from keyboard_fl.flower import APP_DIR

    root = package_dir("keyboard_fl", ".")
    assert str(root.resolve()) == str(Path(keyboard_fl.__file__).parent.resolve())
    assert (DEFAULT_LANG_DIR / "persona.json").is_file() and (DEFAULT_LANG_DIR / "slots").is_dir()
    assert {"index.html", "app.js", "style.css"} <= {p.name for p in STATIC.iterdir()}
    assert (APP_DIR / "pyproject.toml").is_file()
    for d in (DEFAULT_LANG_DIR, STATIC, APP_DIR):
        assert d.resolve().is_relative_to(root.resolve())


def test_missing_package_data_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match=r"package data keyboard_fl\.data/nothing is missing"):
        package_dir("keyboard_fl.data", "nothing")
