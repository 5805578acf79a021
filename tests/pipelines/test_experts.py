"""Noise-level experts: routing by timestep, equivalence with a single model, loading and bad folders."""
import json

import pytest
import torch

import aigc
from aigc.errors import CheckpointError, ConfigError
from aigc.families.image.experts import ExpertImageModel
from aigc.families.image.model import ImageModel
from aigc.families.t2i.recipe import build_config, train as train_t2i

FAST = {"train.max_steps": "2", "val_images": "2", "train.eval_interval": "2", "train.warmup_steps": "1",
        "train.batch_size": "8", "train_images": "16"}
PROMPT = "a red circle left of a blue square"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    for name, seed in (("a", "0"), ("b", "1")):
        train_t2i(build_config("tiny", "shapes", {**FAST, "train.seed": seed}), root / name, progress=False)
    return root


def _write(folder, experts):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "experts.json").write_text(json.dumps({"experts": experts}))
    return folder


def _recording(im: ImageModel, seen: list) -> ImageModel:
    forward = im.model.forward

    def record(x, t, cond):
        seen.extend(int(v) for v in t.unique())
        return forward(x, t, cond)

    im.model.forward = record
    return im


def test_one_run_as_two_experts_samples_exactly_like_the_run(runs, tmp_path):
    single = aigc.load(runs / "a")
    joined = aigc.load(_write(tmp_path / "same", [{"model": str(runs / "a"), "from_t": 0},
                                                  {"model": str(runs / "a"), "from_t": 500}]))
    assert isinstance(joined, ExpertImageModel) and joined.text_conditional
    for kwargs in ({"sampler": "ddim", "steps": 6}, {"sampler": "dpm++sde", "steps": 5}):
        ref = single.generate(3, prompt=PROMPT, guidance=3.0, seed=4, **kwargs)
        assert torch.equal(joined.generate(3, prompt=PROMPT, guidance=3.0, seed=4, **kwargs), ref)


def test_each_expert_denoises_only_its_own_timesteps(runs, tmp_path):
    low, high = [], []
    joined = ExpertImageModel([(600, _recording(aigc.load(runs / "b"), high)),
                               (0, _recording(aigc.load(runs / "a"), low))], tmp_path)
    assert [s for s, _ in joined.experts] == [0, 600] and joined.expert_for(599) is joined.experts[0][1]
    joined.generate(2, prompt=PROMPT, guidance=2.0, sampler="ddim", steps=10, seed=0)
    assert low and high and max(low) < 600 <= min(high)
    low.clear(), high.clear()
    image = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    joined.img2img(image, strength=0.4, steps=10, prompt=PROMPT)  # starts below the switch: low only
    assert low and not high
    with pytest.raises(ValueError, match="two experts"):
        joined.model_fn(2, None, 1.0, PROMPT)(torch.zeros(2, 3, 32, 32), torch.tensor([10, 900]))


def test_an_expert_with_its_own_guidance_ignores_the_asked_scale(runs, tmp_path):
    single = aigc.load(runs / "a")
    ref = single.generate(2, prompt=PROMPT, guidance=3.0, sampler="ddim", steps=6, seed=1)
    fixed = aigc.load(_write(tmp_path / "fixed", [{"model": str(runs / "a"), "from_t": 0, "guidance": 3},
                                                  {"model": str(runs / "a"), "from_t": 500, "guidance": 3.0}]))
    assert fixed.guidance == [3, 3.0]
    assert torch.equal(fixed.generate(2, prompt=PROMPT, guidance=1.0, sampler="ddim", steps=6, seed=1), ref)
    low, high = [], []
    mixed = ExpertImageModel([(500, _batch_sizes(runs / "b", high)), (0, _batch_sizes(runs / "a", low))],
                             tmp_path, guidance=[1.0, None])  # given out of order: sorted with their scales
    assert mixed.guidance == [None, 1.0]
    mixed.generate(2, prompt=PROMPT, guidance=4.0, sampler="ddim", steps=6, seed=0)
    assert set(low) == {4} and set(high) == {2}  # guided: conditional + unconditional; scale 1: conditional only
    for bad in (0, -1.0, "2", True):
        with pytest.raises(ConfigError, match="guidance must be a positive number"):
            ExpertImageModel([(0, single)], tmp_path, guidance=[bad])
    _write(tmp_path / "bad", [{"model": str(runs / "a"), "from_t": 0, "guidance": 0}])
    with pytest.raises(CheckpointError, match="positive number"):
        aigc.load(tmp_path / "bad")


def _batch_sizes(run, seen: list) -> ImageModel:
    im = aigc.load(run)
    forward = im.model.forward

    def record(x, t, cond):
        seen.append(x.size(0))
        return forward(x, t, cond)

    im.model.forward = record
    return im


def test_bad_experts_are_refused(runs, tmp_path):
    a = aigc.load(runs / "a")
    with pytest.raises(ConfigError, match="from_t 0"):
        ExpertImageModel([(100, a)], tmp_path)
    with pytest.raises(ConfigError, match="same timestep"):
        ExpertImageModel([(0, a), (0, a)], tmp_path)
    with pytest.raises(ConfigError, match="past its schedule"):
        ExpertImageModel([(0, a), (5000, a)], tmp_path)
    mean_type = "x0" if a.config["diffusion"]["mean_type"] != "x0" else "v"
    other = ImageModel(a.model, a.process, {**a.config, "diffusion": {**a.config["diffusion"], "mean_type": mean_type}},
                       a.path, a.tokenize)
    with pytest.raises(ConfigError, match="mean_type"):
        ExpertImageModel([(0, a), (500, other)], tmp_path)
    for name, text in (("broken", "{not json"), ("empty", '{"experts": []}'), ("keys", '{"experts": [{"run": 1}]}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "experts.json").write_text(text)
        with pytest.raises(CheckpointError, match="experts"):
            aigc.load(tmp_path / name)
    with pytest.raises(CheckpointError, match="from_t"):
        aigc.load(_write(tmp_path / "neg", [{"model": str(runs / "a"), "from_t": -1}]))
    with pytest.raises(CheckpointError, match="does not exist"):
        aigc.load(_write(tmp_path / "missing", [{"model": "nowhere", "from_t": 0}]))
    with pytest.raises(CheckpointError, match="from_t 0"):
        aigc.load(_write(tmp_path / "gap", [{"model": str(runs / "a"), "from_t": 10}]))
    nested = _write(tmp_path / "outer", [{"model": str(_write(tmp_path / "inner", [
        {"model": str(runs / "a"), "from_t": 0}])), "from_t": 0}])
    with pytest.raises(CheckpointError, match="itself a folder of experts"):
        aigc.load(nested)
