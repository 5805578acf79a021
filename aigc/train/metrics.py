"""metrics.jsonl (one JSON object a line) and its loss.png curve."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# What the loss measures, by the unit the run counts its throughput in (default: plain "loss").
LOSS_UNITS = {"tokens": "nats/token"}


def rate_key(unit: str) -> str:
    """The metrics.jsonl key of the throughput: ``tokens_per_s``, ``images_per_s``, ..."""
    return f"{unit}_per_s"


class MetricsLog:
    def __init__(self, run_dir: Path, unit: str = "tokens") -> None:
        """``unit``: what the run's batches count (tokens, images); it names the loss plot's axis."""
        self.path = Path(run_dir) / "metrics.jsonl"
        self.png = Path(run_dir) / "loss.png"
        self.unit = unit
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
        return out

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (by a run that died before its next checkpoint)."""
        rows = [r for r in self.rows() if r.get("step", 0) <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def plot(self) -> None:
        """Draw training and validation loss against the step."""
        from ..plotting import pyplot

        plt = pyplot()
        rows = self.rows()
        train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
        if not train and not val:
            return
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        if train:
            ax.plot(*zip(*train), label="training loss", lw=1)
        if val:
            ax.plot(*zip(*val), "o-", label="validation loss", ms=3)
        ax.set_xlabel("step")
        per = LOSS_UNITS.get(self.unit)
        ax.set_ylabel(f"loss ({per})" if per else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        tmp = self.png.with_name(f".{self.png.name}.tmp-{os.getpid()}")
        try:
            fig.savefig(tmp, format="png")
            os.replace(tmp, self.png)
        finally:
            plt.close(fig)
            tmp.unlink(missing_ok=True)
