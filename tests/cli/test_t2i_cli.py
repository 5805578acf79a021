"""The text-to-image command line: train t2i (own and MiniLM encoders), generate image --prompt, eval t2i
(shapes prompt adherence; FID/KID and retrieval for captioned data)."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from aigc import checkpoint as ckpt
from aigc.data.image_files import read_png_parameters
from aigc.eval import fid
from aigc.eval import t2i_captioned as captioned_eval
from aigc.eval.retrieval import train_contrastive

from ..conftest import run_cli, run_main
from ..pipelines.test_t2i_captioned_eval import CFG, STEPS, PixelFeatures, make_captioned_folder, train_tiny_t2i

TINY = ["--preset", "tiny", "--no-progress", "--train_images=64", "--val_images=8", "--train.eval_interval=10"]


def _last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("t2iruns") / "own"
    res = run_cli("train", "t2i", "--data", "shapes", "--out", str(out), "--max-steps", "12", *TINY, "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    result = _last_json(res.stdout)
    assert result["step"] == 12 and result["text_encoder"] == "own" and result["image_size"] == 32
    return out


def test_generate_from_a_prompt_with_a_negative_prompt(own_run, tmp_path):
    folder = tmp_path / "each"
    args = ["generate", "image", "--model", str(own_run), "--n", "3", "--steps", "3", "--prompt",
            "a red circle left of a blue square", "--negative-prompt", "a green ring", "--guidance", "4",
            "--seed", "2", "--no-progress"]
    res = run_cli(*args, "--out", str(tmp_path / "grid.png"), "--out-dir", str(folder), "--json")
    assert res.returncode == 0, res.stderr
    params = read_png_parameters(folder / "0001.png")
    assert params["prompt"] == "a red circle left of a blue square" and params["negative_prompt"] == "a green ring"
    assert params["guidance"] == 4.0 and params["steps"] == 3 and "class" in params
    with Image.open(folder / "0000.png") as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    again = tmp_path / "again"
    assert run_cli(*args, "--out-dir", str(again)).returncode == 0
    for a, b in zip(sorted(folder.iterdir()), sorted(again.iterdir())):  # same seed, same images
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_a_folder_of_noise_level_experts_generates_and_evaluates_like_a_run(own_run, tmp_path):
    experts = tmp_path / "experts"
    experts.mkdir()
    (experts / "experts.json").write_text(json.dumps({"experts": [
        {"model": str(own_run), "from_t": 0}, {"model": str(own_run), "from_t": 700}]}))
    args = ["generate", "image", "--n", "2", "--steps", "4", "--prompt", "a red circle", "--guidance", "2",
            "--no-progress"]
    for model, name in ((own_run, "single.png"), (experts, "joined.png")):
        assert run_cli(*args, "--model", str(model), "--out", str(tmp_path / name)).returncode == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "single.png")), np.asarray(Image.open(tmp_path / "joined.png")))
    res = run_cli("eval", "t2i", "--model", str(experts), "--n", "2", "--steps", "2", "--guidance", "2", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    (experts / "experts.json").write_text('{"experts": [{"model": "nowhere", "from_t": 0}]}')
    res = run_cli(*args, "--model", str(experts), "--out", str(tmp_path / "bad.png"))
    assert res.returncode == 2 and "does not exist" in res.stderr and not (tmp_path / "bad.png").exists()


def test_long_prompt_is_truncated_with_a_warning_and_bad_requests_exit_2(own_run, tmp_path):
    out = tmp_path / "x.png"
    base = ["generate", "image", "--model", str(own_run), "--n", "1", "--steps", "2", "--no-progress", "--out", str(out)]
    res = run_cli(*base, "--prompt", "a small red circle above a large blue square " * 8)
    assert res.returncode == 0, res.stderr
    assert "warning: prompt truncated" in res.stderr and "Traceback" not in res.stderr
    res = run_cli(*base[:-2], "--class", "3", "--out", str(tmp_path / "y.png"))
    assert res.returncode == 2 and "give a prompt, not a class" in res.stderr
    assert not (tmp_path / "y.png").exists()


def test_eval_t2i_reports_seen_and_heldout_adherence(own_run, tmp_path):
    plot = tmp_path / "adherence.png"
    res = run_cli("eval", "t2i", "--model", str(own_run), "--n", "3", "--guidance", "1,3", "--steps", "2",
                  "--plot", str(plot), "--no-progress", "--json")
    assert res.returncode == 0, res.stderr
    out = _last_json(res.stdout)
    assert out["real"]["seen"]["overall"] == 1.0 and out["real"]["heldout"]["overall"] == 1.0  # the checker's ceiling
    assert {(s["split"], s["guidance"]) for s in out["scores"]} == {(a, g) for a in ("seen", "heldout") for g in (1, 3)}
    assert all(0.0 <= s["overall"] <= 1.0 and s["prompts"] == 3 for s in out["scores"])
    assert plot.stat().st_size > 1000
    bad = run_cli("eval", "t2i", "--model", str(own_run), "--guidance", "1,-2", "--no-progress")
    assert bad.returncode == 2 and "positive" in bad.stderr


def test_minilm_encoder_run_keeps_the_frozen_weights_out_of_its_checkpoint(tmp_path):
    out = tmp_path / "minilm"
    res = run_cli("train", "t2i", "--data", "shapes", "--text-encoder", "minilm", "--out", str(out),
                  "--max-steps", "2", *TINY, "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    folder = ckpt.resolve(out)
    assert (folder / "model.safetensors").stat().st_size < 5_000_000  # the UNet only, not MiniLM's 90 MB
    assert not (folder / "tokenizer.json").exists()                  # WordPiece comes from the package
    gen = run_cli("generate", "image", "--model", str(out), "--n", "1", "--steps", "2", "--prompt", "一个红色的圆",
                  "--guidance", "2", "--no-progress", "--out", str(tmp_path / "zh.png"))
    assert gen.returncode == 0, gen.stderr


def test_train_t2i_bad_input_exits_2(tmp_path):
    res = run_cli("train", "t2i", "--text-encoder", "clip", "--out", str(tmp_path / "r"), *TINY)
    assert res.returncode == 2 and "text_encoder" in res.stderr
    res = run_cli("train", "t2i", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), *TINY)
    assert res.returncode == 2 and "captions" in res.stderr
    res = run_cli("train", "t2i", "--out", str(tmp_path / "r"), *TINY, "--shapes.objects=[0.5,0.6,0.3]")
    assert res.returncode == 2 and "object-count mix" in res.stderr
    res = run_cli("train", "t2i", "--out", str(tmp_path / "r"), *TINY, "--diffusion.timestep_sampler=logit-normal",
                  "--diffusion.logit_normal_std=0")
    assert res.returncode == 2 and "std > 0" in res.stderr
    assert not (tmp_path / "r").exists()


def test_train_t2i_with_a_relation_heavy_mix_and_noise_leaning_timesteps(tmp_path):
    out = tmp_path / "mix"
    res = run_cli("train", "t2i", "--data", "shapes", "--out", str(out), "--max-steps", "2", *TINY,
                  "--shapes.objects=[0,1,0]", "--shapes.relation=[1,0]", "--diffusion.timestep_sampler=logit-normal",
                  "--diffusion.logit_normal_mean=0.5")
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = ckpt.read_config(ckpt.resolve(out))
    assert cfg["shapes"] == {"objects": [0.0, 1.0, 0.0], "relation": [1.0, 0.0]}
    assert cfg["diffusion"]["timestep_sampler"] == "logit-normal" and cfg["diffusion"]["logit_normal_mean"] == 0.5


# ---- captioned data (emoji, a folder): FID/KID and retrieval, in-process with cheap stand-ins ----------


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2ifolder")
    folder = make_captioned_folder(root / "squares")
    return train_tiny_t2i(folder, root / "run")


@pytest.fixture()
def stand_ins(tmp_path, monkeypatch):
    """A pixel-statistics Inception, a 3-step contrastive model and a temporary FID cache."""
    trained = []

    def contrastive(train, progress=False):
        trained.append(len(train))
        return train_contrastive(train, CFG, seed=0, train_cfg=STEPS)

    monkeypatch.setattr(captioned_eval, "InceptionFeatures", lambda progress=False: PixelFeatures())
    monkeypatch.setattr(captioned_eval, "cached_contrastive", contrastive)
    monkeypatch.setattr(fid, "cache_root", lambda: tmp_path)
    return trained


def test_eval_t2i_on_a_captioned_folder_prints_fid_and_retrieval(folder_run, stand_ins, tmp_path, monkeypatch,
                                                                  capsys):
    base = ["eval", "t2i", "--model", str(folder_run), "--n", "3", "--guidance", "1,2", "--steps", "2",
            "--batch-size", "4", "--no-progress"]
    code, out, err = run_main(monkeypatch, capsys, *base)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["guidance", "FID", "KID", "i->t@1", "i->t@5", "t->i@1", "t->i@5"]
    assert [line.split()[0] for line in lines[1:5]] == ["1", "2", "real", "chance"]
    assert lines[4].split()[1:] == ["-", "-", "33.3", "100.0", "33.3", "100.0"]  # 1 and 5 of 3 candidates
    assert "3 generated images vs 4 real" in lines[-1] and "test split" in lines[-1] and "(10 images)" in lines[-1]
    plot = tmp_path / "scores.png"
    code, out, err = run_main(monkeypatch, capsys, *base, "--plot", str(plot), "--json")
    assert code == 0, err
    result = _last_json(out)
    assert result["n"] == 3 and result["n_ref"] == 4 and result["retrieval_prompts"] == 3
    assert result["contrastive_train_images"] == 10 and stand_ins == [10, 10]  # trained on the train split
    assert [s["guidance"] for s in result["scores"]] == [1.0, 2.0]
    assert all(0.0 <= s[k] <= 1.0 for s in result["scores"] for k in ("image_to_text@1", "text_to_image@1"))
    assert result["plot"] == str(plot) and plot.stat().st_size > 1000


def test_eval_t2i_bad_input_exits_2(folder_run, stand_ins, tmp_path, monkeypatch, capsys):
    base = ["eval", "t2i", "--model", str(folder_run), "--steps", "2", "--no-progress"]
    for extra, message in ((["--n", "0"], "--n must be at least 1"), (["--n", "1"], "at least 2"),
                           (["--guidance", "0"], "positive"), (["--batch-size", "0"], "batch-size")):
        code, out, err = run_main(monkeypatch, capsys, *base, *extra)
        assert code == 2 and message in err and "Traceback" not in err, (extra, err)
    moved = tmp_path / "moved"  # the model's training folder is gone
    shutil.copytree(ckpt.resolve(folder_run), moved)
    config = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "data": str(tmp_path / "gone")}))
    code, out, err = run_main(monkeypatch, capsys, "eval", "t2i", "--model", str(moved), "--n", "3", "--no-progress")
    assert code == 2 and "neither a captioned data set" in err and not out
    assert stand_ins == []  # refused before any contrastive training


def test_eval_t2i_start_scores_a_later_range_of_test_scenes(own_run):
    res = run_cli("eval", "t2i", "--model", str(own_run), "--n", "2", "--start", "40", "--steps", "2",
                  "--no-progress", "--json")
    assert res.returncode == 0, res.stderr
    out = _last_json(res.stdout)
    assert out["start"] == 40 and all(s["prompts"] == 2 for s in out["scores"])
    bad = run_cli("eval", "t2i", "--model", str(own_run), "--start", "-1", "--no-progress")
    assert bad.returncode == 2 and "--start" in bad.stderr
