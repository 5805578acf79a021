"""Decoding-step linear layers: the same numbers as F.linear, whatever the row count."""
import pytest
import torch
import torch.nn.functional as F

from aigc.nn.skinny import OUTPUT_BLOCK, SKINNY_ROWS, output_logits, rows_linear, skinny_linear


@pytest.mark.parametrize("rows", [1, 2, 4, SKINNY_ROWS, SKINNY_ROWS + 1, 32])
@pytest.mark.parametrize("bias", [True, False])
def test_skinny_and_rows_linear_match_f_linear(rows, bias):
    g = torch.Generator().manual_seed(rows)
    x, w = torch.randn(rows, 48, generator=g), torch.randn(80, 48, generator=g)
    b = torch.randn(80, generator=g) if bias else None
    ref = F.linear(x, w, b)
    out = skinny_linear(x, w, b)
    assert out.is_contiguous() and out.shape == (rows, 80)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rows_linear(x, w, b), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 3, 32])
def test_output_logits_match_f_linear_across_blocks(rows):
    g = torch.Generator().manual_seed(rows)
    x, w = torch.randn(rows, 16, generator=g), torch.randn(2 * OUTPUT_BLOCK + 37, 16, generator=g)
    out = output_logits(x, w)
    assert out.is_contiguous() and out.shape == (rows, w.size(0))
    torch.testing.assert_close(out, F.linear(x, w), rtol=1e-5, atol=1e-5)
