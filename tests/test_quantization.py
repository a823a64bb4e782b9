"""The quantization attack's round trip (measures/quantization.py): gguf-py's formats, on the shipped tensors."""

import numpy as np
import pytest
import torch

from rlcp_utils.measures import quantization


def on_q4_1_grid(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Weights as a Q4_1 file stores them: per block of 32, d·q + m with q in 0..15 (both ends used), d and m fp16."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(1, 15, (rows * cols // 32, 32), generator=g)
    q[:, 0], q[:, 1] = 0, 15  # the block's min and max; every other weight strictly inside
    d = (torch.rand(rows * cols // 32, 1, generator=g) * 0.01 + 1e-3).half().float()
    m = (torch.randn(rows * cols // 32, 1, generator=g) * 0.05).half().float()
    return (d * q + m).reshape(rows, cols)


def test_weights_on_the_q4_1_grid_read_back_unchanged():
    w = on_q4_1_grid(8, 64)
    assert torch.allclose(quantization.round_trip(w, "Q4_1"), w, rtol=0, atol=1e-6)


def test_a_move_under_half_a_step_is_undone_and_a_larger_one_is_not():
    w = on_q4_1_grid(4, 64, seed=1)
    step = quantization.q4_1_steps(w)
    interior = torch.ones_like(w, dtype=torch.bool).reshape(-1, 32)
    interior[:, :2] = False  # the blocks' min and max stay, so the grid stays
    interior = interior.reshape(w.shape)
    small = torch.where(interior, w + 0.4 * step, w)
    assert torch.allclose(quantization.round_trip(small, "Q4_1"), w, atol=1e-6)
    large = torch.where(interior, w + 0.6 * step, w)
    moved = (quantization.round_trip(large, "Q4_1") - w).abs()
    assert torch.allclose(moved[interior], step[interior], rtol=1e-3)  # one level up: the move is kept


# the worst error in steps of the block: half a step, plus the fp16 rounding of the stored scale (times up to
# 127 levels for Q8_0); Q4_0's levels run from -8 to +7, so a weight at the far end opposite the block's largest
# magnitude can be a whole step off
@pytest.mark.parametrize("fmt,levels,worst", [("Q4_1", 15, 0.51), ("Q4_0", 8, 1.01), ("Q8_0", 127, 0.57)])
def test_the_rounding_error_is_about_half_a_step(fmt, levels, worst):
    w = torch.randn(16, 96, generator=torch.Generator().manual_seed(2))
    err = (quantization.round_trip(w, fmt) - w).abs().reshape(-1, 32)
    blocks = w.reshape(-1, 32)
    width = (blocks.max(1).values - blocks.min(1).values) if fmt == "Q4_1" else blocks.abs().max(1).values
    in_steps = err / (width / levels)[:, None]
    assert float(in_steps.max()) <= worst and 0.2 < float(in_steps.mean()) < 0.3  # uniform rounding: mean 1/4


def test_rows_must_fill_whole_blocks():
    with pytest.raises(ValueError, match="blocks of 32"):
        quantization.round_trip(torch.zeros(2, 40), "Q8_0")


def test_a_quantized_copy_rounds_the_shipped_tensors_only(tiny_model):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    q = quantization.quantized_copy(tiny_model, "Q4_0")
    kinds = quantization.quantized_weights(tiny_model)
    assert sum(k == "block" for k in kinds.values()) == 7 * tiny_model.config.num_hidden_layers
    assert list(kinds.values()).count("Q8_0") == 1  # the embedding
    for name, p in q.named_parameters():
        assert torch.equal(dict(tiny_model.named_parameters())[name], before[name])  # the model itself untouched
        if name in kinds:
            fmt = "Q4_0" if kinds[name] == "block" else "Q8_0"
            assert torch.equal(p, quantization.round_trip(before[name], fmt)), name
        else:
            assert torch.equal(p, before[name]), name  # norms stay fp32
    if tiny_model.config.tie_word_embeddings:
        assert q.get_output_embeddings().weight is q.get_input_embeddings().weight


def test_change_in_steps_is_zero_for_the_same_model_and_counts_a_known_move(tiny_model):
    assert np.all(quantization.change_in_steps(tiny_model, tiny_model) == 0)
    moved = quantization.quantized_copy(tiny_model, "Q8_0")
    with torch.no_grad():
        for name, kind in quantization.quantized_weights(moved).items():
            if kind == "block":
                p = dict(moved.named_parameters())[name]
                p.copy_(dict(tiny_model.named_parameters())[name] + 0.25 * quantization.q4_1_steps(dict(tiny_model.named_parameters())[name]))
    ratios = quantization.change_in_steps(tiny_model, moved)
    assert ratios.size > 0 and np.allclose(ratios, 0.25, atol=1e-3)


def test_a_model_on_the_shipped_grid_is_left_as_it_is_by_the_shipped_round_trip(tiny_model):
    on_grid = quantization.quantized_copy(tiny_model, "Q4_1")  # blocks Q4_1, embedding Q8_0: the shipped formats
    changed, total = quantization.shipped_round_trip_changes(on_grid)
    assert total > 0 and changed == 0
    assert quantization.shipped_round_trip_changes(tiny_model)[0] > 0  # random weights are not on it


def test_ratio_ci_is_the_ratio_of_means_with_an_interval_around_it():
    num, den = np.array([0.2, 0.4, 0.6, 0.0]), np.array([1.0, 1.0, 0.8, 0.6])
    ratio, lo, hi = quantization.ratio_ci(num, den, 500, 0)
    assert ratio == pytest.approx(1.2 / 3.4) and lo <= ratio <= hi and lo < hi
    assert quantization.ratio_ci(den, den, 200, 0) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        quantization.ratio_ci(num, den[:3], 100, 0)
