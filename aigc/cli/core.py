"""Commands every family shares: data list, average."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import JSON_HELP, app, data_app, emit_json


# ---- data --------------------------------------------------------------------------
@data_app.command("list")
def data_list_cmd(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Show each embedded data set, whether it is installed, its size, and how to install it."""
    from ..data import list_datasets

    rows = list_datasets()
    if as_json:
        emit_json({"datasets": [r.__dict__ for r in rows]})
        return
    print(f"{'name':<14} {'kind':<9} {'installed':<10} {'size':>9}  description / install")
    for r in rows:
        size = f"{r.size_bytes / 1e6:.1f} MB" if r.size_bytes else "-"
        status = "yes" if r.installed else "no"
        extra = r.description if r.installed else f"{r.description} — install: {r.install_hint}"
        print(f"{r.name:<14} {r.kind:<9} {status:<10} {size:>9}  {extra}")


@app.command("average")
def average_cmd(
    model: Path = typer.Option(..., help="Run folder."),
    last: int = typer.Option(5, help="Average this many newest checkpoints."),
    out: Optional[Path] = typer.Option(None, help="Checkpoint folder to write (default RUN/averaged)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Average the weights of a run's last N checkpoints into a new checkpoint folder.

    The translate presets checkpoint keep_last times over the last 10 % of their steps
    (train.average_window), so the newest checkpoints are the final stretch of the run."""
    from ..train.average import average_checkpoints

    path = average_checkpoints(model, last, out)
    if as_json:
        emit_json({"averaged": str(path), "last": last})
    else:
        print(f"averaged the last {last} checkpoints into {path}")
