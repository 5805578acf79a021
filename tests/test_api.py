import pytest

import aigc
from aigc.errors import ConfigError


def test_load_generate_stream_evaluate(trained_run):
    lm = aigc.load(trained_run)
    text = lm.generate("the cat", max_new_tokens=15, seed=0)
    assert isinstance(text, str) and text == lm.generate("the cat", max_new_tokens=15, seed=0)
    assert "".join(lm.stream("the cat", max_new_tokens=15, seed=0)) == text
    batch = lm.generate(["a", "b"], max_new_tokens=5, temperature=0)
    assert isinstance(batch, list) and len(batch) == 2
    score = lm.evaluate("the cat sat on the mat. " * 20)
    assert score.unit == "char" and 0 < score.bits_per_unit < 10 and score.units == score.tokens
    with pytest.raises(ConfigError, match="unknown generation option"):
        lm.generate("x", beams=3)
