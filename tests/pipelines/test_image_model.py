import json

import pytest
import torch

import aigc
from aigc import checkpoint as ckpt
from aigc.errors import ConfigError
from aigc.families.image.recipe import build_config, train as train_image

pytest.importorskip("sklearn")  # digits

FAST = {"train.max_steps": "12", "train.eval_interval": "4", "val_images": "16", "train.batch_size": "16",
        "model.dropout": "0.1", "class_cond": "true"}


def _tensors(run, stem):
    return ckpt.read_tensors(ckpt.resolve(run, prefer=("latest",)), stem)


def test_resume_with_importance_sampled_timesteps_is_exact(tmp_path):
    """The pure-VLB objective samples t from its loss history: that history is checkpointed, so a
    run stopped and resumed reaches the same weights as one that never stopped."""
    over = {**FAST, "diffusion.loss": "kl", "diffusion.timestep_sampler": "loss-second-moment",
            "diffusion.timesteps": "20"}
    train_image(build_config("tiny", "digits", over), tmp_path / "straight", progress=False)
    first = train_image(build_config("tiny", "digits", over), tmp_path / "split", stop_at=6, progress=False)
    assert first["step"] == 6
    state = json.loads(ckpt.read_text(ckpt.resolve(tmp_path / "split", prefer=("latest",)), "trainer_state.json"))
    assert sum(state["objective"]["counts"]) > 0  # the sampler's history travels with the checkpoint
    second = train_image(build_config("tiny", "digits", over), tmp_path / "split", resume=True, progress=False)
    assert second["step"] == 12
    for stem in ("model", "ema", "optimizer"):
        a, b = _tensors(tmp_path / "straight", stem), _tensors(tmp_path / "split", stem)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (stem, k)


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("img") / "run"
    train_image(build_config("tiny", "digits", FAST), out, progress=False)
    return aigc.load(out)


def test_loaded_model_generates_and_edits(image_model):
    im = image_model
    assert isinstance(im, aigc.ImageModel) and im.image_shape == (1, 8, 8) and im.num_classes == 10
    steps_seen = []
    a = im.generate(4, sampler="ddim", steps=5, label=[0, 1, 2, 3], guidance=3.0, seed=1,
                    callback=lambda info: steps_seen.append(info["step"]))
    assert a.shape == (4, 1, 8, 8) and a.dtype == torch.uint8 and steps_seen == [0, 1, 2, 3, 4]
    assert torch.equal(a, im.generate(4, sampler="ddim", steps=5, label=[0, 1, 2, 3], guidance=3.0, seed=1))
    assert not torch.equal(a, im.generate(4, sampler="ddim", steps=5, label=[0, 1, 2, 3], guidance=3.0, seed=2))
    for sampler in ("ddpm", "dpm++"):
        assert im.generate(2, sampler=sampler, steps=3, seed=0).shape == (2, 1, 8, 8)  # null class
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1
    filled = im.inpaint(a[0], mask, steps=4, seed=0)
    assert torch.equal(filled[0, :, 2:6, 2:6], a[0, :, 2:6, 2:6])
    assert im.img2img(a, strength=0.5, steps=6, label=1).shape == a.shape


def test_cancel_from_the_callback(image_model):
    def stop(info):
        if info["step"] == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        image_model.generate(2, steps=5, callback=stop)


@pytest.mark.parametrize("call", [
    lambda m: m.generate(0),
    lambda m: m.generate(2, steps=0),
    lambda m: m.generate(2, steps=5000),
    lambda m: m.generate(2, sampler="heun"),
    lambda m: m.generate(2, label="Trouser"),
    lambda m: m.generate(2, label=[1, 2, 3]),
    lambda m: m.generate(2, guidance=2.0),  # guidance without a class
    lambda m: m.inpaint(torch.zeros(1, 8, 8, dtype=torch.uint8), torch.ones(5, 5)),
    lambda m: m.img2img(torch.zeros(3, 8, 8, dtype=torch.uint8)),
    lambda m: m.img2img(torch.zeros(1, 8, 8)),
])
def test_bad_requests_are_config_errors(image_model, call):
    with pytest.raises(ConfigError):
        call(image_model)
