"""shapes prompt adherence: which test scenes are asked for, and how they are scored."""
import numpy as np
import pytest
import torch

from aigc.data.shapes import load_shapes
from aigc.diffusion import sampling_config
from aigc.errors import ConfigError
from aigc.eval.t2i_shapes import evaluate_shapes_adherence


class PerfectPainter:
    """Stands in for a text-to-image model: paints each prompt's true scene (any test scene it was asked
    for by caption), and records the prompts."""

    text_conditional = True
    image_shape = (3, 32, 32)

    def __init__(self, start: int, n: int) -> None:
        self.truth = {}
        for split in ("test_seen", "test_heldout"):
            arrays = load_shapes(split, n=n, start=start)
            self.truth.update(zip(arrays.captions, arrays.images))
        self.prompts: list[str] = []

    def sampling(self, sampling=None, **options):
        return sampling_config(sampling, **options)

    def generate(self, n, sampling=None, *, prompt, **_) -> torch.Tensor:
        self.prompts += prompt
        return torch.from_numpy(np.stack([self.truth[p] for p in prompt]))


def test_start_picks_the_scenes_start_to_start_plus_n_of_each_split():
    painter = PerfectPainter(start=30, n=6)
    result = evaluate_shapes_adherence(painter, n=6, start=30, guidance=(1.0, 3.0), batch_size=4)
    expected = [c for split in ("test_seen", "test_heldout") for c in load_shapes(split, n=6, start=30).captions]
    assert painter.prompts == [c for i in (0, 6) for c in expected[i:i + 6] * 2]  # each split at each scale
    assert result["start"] == 30
    assert [s["overall"] for s in result["scores"]] == [1.0] * 4  # the true scenes score perfectly
    assert load_shapes("test_seen", n=6).captions != load_shapes("test_seen", n=6, start=30).captions


def test_a_negative_start_is_refused():
    with pytest.raises(ConfigError, match="--start"):
        evaluate_shapes_adherence(PerfectPainter(start=0, n=1), n=1, start=-1)
