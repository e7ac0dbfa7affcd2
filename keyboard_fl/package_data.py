"""Directories shipped as package data, found through :mod:`importlib.resources`.

The simulator's language files (``keyboard_fl/data/lang``), the demo page
(``keyboard_fl/demo/static``) and the Flower App project
(``keyboard_fl/flower/app``) are listed in ``pyproject.toml``'s package-data,
so they travel in the wheel; code finds them here rather than through paths
relative to the checkout, which break once the package is installed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_dir(package: str, name: str) -> Path:
    """The directory ``name`` inside ``package`` as a real filesystem path.

    Wheels install unzipped, so :func:`importlib.resources.files` gives a
    :class:`~pathlib.Path`; a zip import would not, and is refused clearly.
    """
    p = resources.files(package).joinpath(name)
    if not isinstance(p, Path):
        raise RuntimeError(f"{package}/{name} is inside an archive ({p!r}); install keyboard-fl unzipped (pip install)")
    if not p.is_dir():
        raise FileNotFoundError(f"package data {package}/{name} is missing at {p}: reinstall keyboard-fl")
    return p


__all__ = ["package_dir"]
