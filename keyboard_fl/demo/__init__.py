"""The suggestion-strip demo (web page) and its CLI hook.

``keyboard-fl demo`` calls :func:`demo_command`. FastAPI and uvicorn are
imported only when the demo runs, so the rest of the CLI stays light.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_RUNS_ROOT = Path("runs/main")


def demo_command(
    runs_root: Path = DEFAULT_RUNS_ROOT,
    host: str = "127.0.0.1",
    port: int = 8000,
    backend: str = "jax",
    workers: int = 1,
) -> None:
    """Serve the demo for every finished run under ``runs_root`` at http://host:port/.

    Raises :class:`keyboard_fl.runs.RunNotFound` (a FileNotFoundError)
    with a clear message when there is nothing to serve.
    """
    from rich.console import Console

    from keyboard_fl.demo.app import serve
    from keyboard_fl.runs import RunNotFound, discover_runs

    runs = discover_runs(runs_root)
    if not runs:
        raise RunNotFound(
            f"no finished runs under {runs_root} (a run is a directory with metrics.json and model/); "
            "train them with `keyboard-fl main`, or pass another directory"
        )
    console = Console(stderr=True)
    console.print(f"loading {len(runs)} model(s): {', '.join(runs)} from {runs_root}", highlight=False)
    shown = "localhost" if host in ("127.0.0.1", "::1", "localhost") else host
    console.print(f"demo at [bold]http://{shown}:{port}/[/]  (Ctrl-C to stop; typed text is never logged or stored)")
    if host not in ("127.0.0.1", "::1", "localhost"):
        console.print(f"[yellow]warning:[/] listening on {host}: other machines can reach the demo")
    serve(Path(runs_root), host=host, port=port, backend=backend, workers=workers)


__all__ = ["demo_command", "DEFAULT_RUNS_ROOT"]
