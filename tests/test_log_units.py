"""metrics.jsonl names the throughput by what the run counts: tokens for text, images for diffusion."""
import json

import pytest

from aigc.families.text.recipe import build_config as text_config, train as train_text
from aigc.train.metrics import MetricsLog, rate_key


def _rates(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k for k in r if k.endswith("_per_s")} for r in rows if "loss" in r]


def test_text_run_logs_tokens_per_s(tmp_path, corpus_file):
    cfg = text_config("tiny", str(corpus_file), {"model.n_layer": "1", "model.n_embd": "32", "model.block_size": "32",
                                                 "train.batch_size": "8", "train.max_steps": "2",
                                                 "train.eval_batches": "1"})
    train_text(cfg, tmp_path / "text", progress=False)
    rates = _rates(tmp_path / "text")
    assert rates and all(r == {"tokens_per_s"} for r in rates)


def test_image_run_logs_images_per_s(tmp_path):
    pytest.importorskip("sklearn")  # the digits data set ships with scikit-learn
    from aigc.families.image.recipe import build_config as image_config, train as train_image

    cfg = image_config("tiny", "digits", {"train.max_steps": "2", "val_images": "4", "diffusion.timesteps": "50"})
    train_image(cfg, tmp_path / "image", progress=False)
    rates = _rates(tmp_path / "image")
    assert rates and all(r == {"images_per_s"} for r in rates)
    assert (tmp_path / "image" / "loss.png").is_file()


def test_loss_axis_label_follows_the_unit(tmp_path, monkeypatch):
    labels = []
    from matplotlib.axes import Axes

    monkeypatch.setattr(Axes, "set_ylabel", lambda self, text, *a, **k: labels.append(text))
    for unit in ("tokens", "images"):
        log = MetricsLog(tmp_path / unit, unit)
        log.write({"step": 1, "loss": 2.0, rate_key(unit): 10.0})
        log.plot()
    assert labels == ["loss (nats/token)", "loss"]
    assert rate_key("images") == "images_per_s"
