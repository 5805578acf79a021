"""Hardening of the generate / edit / eval commands (issue 26): bounded and chunked --n, --out as a folder
or a JPEG, viewable grids, edit progress bars, PNG parameters (long prompts, no NaN), --stop escapes, and
eval image pointing a text-to-image run to eval t2i. The models are the tiny checkpoints of tests/fixtures."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from aigc.cli.image import chunk_seed
from aigc.cli.text import unescape
from aigc.config import MAX_SEED
from aigc.data.image_files import encode_parameters, read_png_parameters, save_image, upscale
from aigc.errors import ConfigError

from ..conftest import run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FAST = ["--steps", "2", "--no-progress"]


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _refused(res, *words: str) -> None:
    """Exit 2 with one 'error: ...' line on stderr naming ``words``, no traceback."""
    assert res.returncode == 2, (res.returncode, res.stderr[-1000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.fixture(scope="module")
def unet(tmp_path_factory) -> Path:
    """The class-conditional digits UNet (8x8, 1 channel), copied so no test touches tests/fixtures."""
    return Path(shutil.copytree(FIXTURES / "unet-class", tmp_path_factory.mktemp("fx") / "unet-class"))


@pytest.fixture(scope="module")
def t2i(tmp_path_factory) -> Path:
    """The text-to-image model with its own text encoder (16x16 RGB)."""
    return Path(shutil.copytree(FIXTURES / "t2i-own", tmp_path_factory.mktemp("fx") / "t2i-own"))


@pytest.fixture()
def image(tmp_path) -> Path:
    path = tmp_path / "in.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(path)
    return path


@pytest.fixture()
def mask(tmp_path) -> Path:
    keep = np.zeros((8, 8), dtype=np.uint8)
    keep[:, :4] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(keep).save(path)
    return path


# ---- 1. --n bounded and streamed in chunks ---------------------------------------------
def test_n_and_num_samples_are_bounded_and_documented(unet, tmp_path):
    for n in ("0", "100001"):
        res = run_cli("generate", "image", "--model", str(unet), "--n", n, "--out-dir", str(tmp_path / "d"))
        _refused(res, "--n")
    res = run_cli("generate", "image", "--model", str(unet), "--n", "2", "--batch-size", "0",
                  "--out-dir", str(tmp_path / "d"))
    _refused(res, "--batch-size")
    for n in ("0", "10001"):  # parsed before the model is read
        _refused(run_cli("generate", "text", "--model", str(tmp_path / "none"), "--num-samples", n), "--num-samples")
    assert _files(tmp_path) == []
    assert "100,000" in run_cli("generate", "image", "--help").stdout
    assert "10,000" in run_cli("generate", "text", "--help").stdout


def test_small_n_gives_the_images_it_always_did(unet, tmp_path):
    """n <= one batch: the reference images aigc.load(...).generate made before chunking existed."""
    want = load_file(str(FIXTURES / "unet-class" / "reference.safetensors"))["image_ddim3"]
    res = run_cli("generate", "image", "--model", str(unet), "--n", "2", "--sampler", "ddim", "--steps", "3",
                  "--class", "5", "--seed", "2", "--no-progress", "--out-dir", str(tmp_path / "d"))
    assert res.returncode == 0, res.stderr
    for i in range(2):
        assert np.array_equal(_pixels(tmp_path / "d" / f"000{i}.png"), want[i, 0].numpy())
    assert "batch_size" not in read_png_parameters(tmp_path / "d" / "0000.png")


def test_chunks_stream_to_the_folder_with_seeds_that_repeat(unet, tmp_path):
    args = ["generate", "image", "--model", str(unet), "--n", "5", "--batch-size", "2", "--class", "3",
            "--seed", "7", *FAST]
    res = run_cli(*args, "--out-dir", str(tmp_path / "a"), "--json")
    assert res.returncode == 0, res.stderr
    assert _files(tmp_path / "a") == [f"000{i}.png" for i in range(5)]
    assert len(_last_json(res.stdout)["files"]) == 5
    params = read_png_parameters(tmp_path / "a" / "0004.png")
    assert params["index"] == 4 and params["n"] == 5 and params["batch_size"] == 2 and params["seed"] == 7
    assert run_cli(*args, "--out-dir", str(tmp_path / "b")).returncode == 0
    for i in range(5):  # same seed and batch size, same images
        assert np.array_equal(_pixels(tmp_path / "a" / f"000{i}.png"), _pixels(tmp_path / "b" / f"000{i}.png"))
    one = run_cli("generate", "image", "--model", str(unet), "--n", "2", "--class", "3", "--seed", "7", *FAST,
                  "--out-dir", str(tmp_path / "c"))
    assert one.returncode == 0, one.stderr
    for i in range(2):  # chunk 0 is seeded by --seed itself
        assert np.array_equal(_pixels(tmp_path / "a" / f"000{i}.png"), _pixels(tmp_path / "c" / f"000{i}.png"))
    assert not np.array_equal(_pixels(tmp_path / "a" / "0002.png"), _pixels(tmp_path / "a" / "0000.png"))


def test_chunk_seeds_are_fixed_and_do_not_overlap_nearby_seeds():
    assert chunk_seed(5, 0) == 5 and chunk_seed(None, 3) is None
    seeds = [chunk_seed(s, k) for s in range(4) for k in range(1, 4)]
    assert len(set(seeds) | set(range(10))) == len(seeds) + 10 and all(0 <= s <= MAX_SEED for s in seeds)
    assert chunk_seed(MAX_SEED, 1) == chunk_seed(MAX_SEED, 1) <= MAX_SEED


def test_chunked_run_shows_a_bar_over_images(unet, tmp_path):
    res = run_cli("generate", "image", "--model", str(unet), "--n", "3", "--batch-size", "2", "--steps", "2",
                  "--out-dir", str(tmp_path / "d"))
    assert res.returncode == 0, res.stderr
    assert "images" in res.stderr and "3/3" in res.stderr


def test_a_grid_of_too_many_images_is_refused_before_sampling(unet, tmp_path):
    res = run_cli("generate", "image", "--model", str(unet), "--n", "257", *FAST, "--out", str(tmp_path / "g.png"),
                  "--out-dir", str(tmp_path / "d"))
    _refused(res, "--out-dir", "256")
    assert _files(tmp_path) == []


# ---- 2. a count and the folder, not every path -------------------------------------------
def test_generate_image_prints_a_count_and_the_folder(unet, tmp_path):
    folder, grid = tmp_path / "samples", tmp_path / "grid.png"
    res = run_cli("generate", "image", "--model", str(unet), "--n", "3", *FAST, "--out-dir", str(folder),
                  "--out", str(grid))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote 3 images to {folder}/ and the grid {grid}")
    assert "0000.png" not in res.stdout


# ---- 3. --out: a folder, JPEG, unknown extensions -----------------------------------------
def test_out_into_an_existing_folder(unet, image, mask, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    runs = [
        ["generate", "image", "--n", "2"],
        ["edit", "inpaint", "--image", str(image), "--mask", str(mask)],
        ["edit", "img2img", "--image", str(image), "--strength", "0.5"],
    ]
    for args in runs:
        res = run_cli(*args, "--model", str(unet), *FAST, "--out", str(out))
        assert res.returncode == 0, (args, res.stderr)
    assert _files(out) == ["grid.png", "img2img.png", "inpaint.png"]
    assert read_png_parameters(out / "inpaint.png")["edit"] == "inpaint"


def test_out_jpeg_carries_the_parameters_and_unknown_extensions_are_refused(unet, image, tmp_path):
    res = run_cli("generate", "image", "--model", str(unet), "--n", "2", "--seed", "4", *FAST,
                  "--out", str(tmp_path / "grid.jpg"))
    assert res.returncode == 0, res.stderr
    with Image.open(tmp_path / "grid.jpg") as im:
        assert im.format == "JPEG"
    params = read_png_parameters(tmp_path / "grid.jpg")
    assert params["seed"] == 4 and params["grid"] is True
    res = run_cli("edit", "img2img", "--image", str(image), "--model", str(unet), *FAST,
                  "--out", str(tmp_path / "e.jpeg"))
    assert res.returncode == 0 and read_png_parameters(tmp_path / "e.jpeg")["edit"] == "img2img"
    before = _files(tmp_path)
    for name in ("x.gif", "x.webp", "noext"):
        for args in (["generate", "image", "--n", "1"], ["edit", "img2img", "--image", str(image)]):
            res = run_cli(*args, "--model", str(unet), *FAST, "--out", str(tmp_path / name))
            _refused(res, ".png", ".jpg", ".jpeg")
    assert _files(tmp_path) == before


# ---- 4. grids upscaled, single images native ---------------------------------------------
def test_grid_is_enlarged_by_a_whole_factor_and_single_images_keep_their_size(unet, tmp_path):
    res = run_cli("generate", "image", "--model", str(unet), "--n", "4", *FAST, "--out", str(tmp_path / "g.png"),
                  "--out-dir", str(tmp_path / "d"))
    assert res.returncode == 0, res.stderr
    with Image.open(tmp_path / "g.png") as im:
        grid = np.asarray(im)
    native = 2 + 2 * (8 + 2)  # two 8x8 images a row, 2 px of padding
    assert grid.shape[0] >= 256 and grid.shape[0] % native == 0
    k = grid.shape[0] // native
    assert np.array_equal(grid, np.asarray(grid[::k, ::k]).repeat(k, 0).repeat(k, 1))  # nearest-neighbour
    assert _pixels(tmp_path / "d" / "0000.png").shape == (8, 8)


def test_upscale_picks_the_smallest_factor():
    x = torch.zeros(3, 100, 40, dtype=torch.uint8)
    assert upscale(x).shape == (3, 300, 120)
    assert upscale(torch.zeros(1, 300, 10, dtype=torch.uint8)).shape == (1, 300, 10)


# ---- 5. edit progress bars ---------------------------------------------------------------
def test_inpaint_and_img2img_show_progress(unet, image, mask, tmp_path):
    for args, steps in ((["edit", "inpaint", "--mask", str(mask)], 4), (["edit", "img2img", "--strength", "0.5"], 2)):
        res = run_cli(*args, "--image", str(image), "--model", str(unet), "--steps", "4",
                      "--out", str(tmp_path / "o.png"))
        assert res.returncode == 0, res.stderr
        assert f"{args[1]}:" in res.stderr and f"0/{steps} " in res.stderr, res.stderr  # a bar over the steps run
        quiet = run_cli(*args, "--image", str(image), "--model", str(unet), "--steps", "4", "--no-progress",
                        "--out", str(tmp_path / "o.png"))
        assert quiet.returncode == 0 and quiet.stderr == ""


# ---- 6. PNG parameters -------------------------------------------------------------------
def test_a_long_prompt_is_stored_cut_with_its_hash(t2i, tmp_path):
    prompt = "a small red circle above a large blue square and " * 6
    res = run_cli("generate", "image", "--model", str(t2i), "--n", "1", *FAST, "--prompt", prompt,
                  "--out-dir", str(tmp_path / "d"))
    assert res.returncode == 0, res.stderr
    params = read_png_parameters(tmp_path / "d" / "0000.png")
    assert params["prompt"] == prompt[:200] + "…"
    assert params["prompt_sha256"] == hashlib.sha256(prompt.encode()).hexdigest()


def test_parameters_are_standard_json_or_refused(tmp_path):
    assert json.loads(encode_parameters({"prompt": "short", "guidance": 2.0})) == {"prompt": "short", "guidance": 2.0}
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="'guidance'.*finite"):
            encode_parameters({"guidance": bad})
        with pytest.raises(ConfigError):
            save_image(torch.zeros(1, 4, 4, dtype=torch.uint8), tmp_path / "x.png", {"guidance": bad})
    assert _files(tmp_path) == []


# ---- 7. --stop escapes -------------------------------------------------------------------
def test_unescape_reads_only_newline_tab_and_backslash():
    assert unescape(r"\n\n") == "\n\n" and unescape(r"a\tb") == "a\tb" and unescape(r"\\n") == "\\n"
    assert unescape(r"\x41\r") == r"\x41\r" and unescape("plain") == "plain"


def test_stop_backslash_n_stops_at_a_newline(trained_run):
    base = ["generate", "text", "--model", str(trained_run), "The", "--max-new-tokens", "300", "--seed", "1",
            "--json"]
    free = run_cli(*base)
    assert free.returncode == 0, free.stderr
    text = _last_json(free.stdout)["outputs"][0]
    cut = run_cli(*base, "--stop", r"\n")
    assert cut.returncode == 0, cut.stderr
    assert _last_json(cut.stdout)["outputs"][0] == text.split("\n")[0]
    assert "\n" in text  # the check above cut something (this model writes paragraphs)


# ---- 8. eval image on a text-to-image run ------------------------------------------------
def test_eval_image_points_a_text_to_image_run_to_eval_t2i(t2i, tmp_path):
    res = run_cli("eval", "image", "--model", str(t2i), "--n", "2", *FAST)
    _refused(res, "text-to-image", f"aigc eval t2i --model {t2i}")
