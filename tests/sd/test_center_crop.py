"""Centre crop trims the same count from both sides, rounded half to even, as ComfyUI's common_upscale."""
import pytest
import torch

from sdgraph.nodes.sd.resize import center_crop


@pytest.mark.parametrize("size, target, rows, cols", [
    ((7, 10), (1, 1), (0, 7), (2, 8)),    # 1.5 columns of excess a side: 2 are cut (half to even), 6 stay
    ((10, 7), (1, 1), (2, 8), (0, 7)),
    ((8, 11), (3, 2), (0, 8), (0, 11)),   # a third of a row a side rounds to nothing: no crop at all
    ((9, 13), (5, 2), (2, 7), (0, 13)),   # 2.5 rows a side: 2 cut (half to even)
    ((48, 64), (32, 32), (0, 48), (8, 56)),
])
def test_center_crop_matches_comfyui_rounding(size, target, rows, cols):
    h, w = size
    x = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
    out = center_crop(x, *target)
    assert torch.equal(out, x[..., rows[0]:rows[1], cols[0]:cols[1]])
