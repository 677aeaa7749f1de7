"""din_fast._torch_internals: each stand-in for a private torch API still does what torch's own does."""

import torch

from din_fast import _torch_internals


def test_assume_constant_result_marks_like_torch():
    def ours() -> int:
        return 0

    def torchs() -> int:
        return 0

    assert _torch_internals.assume_constant_result(ours) is ours
    torch.compiler.assume_constant_result(torchs)
    assert vars(ours) == vars(torchs) != {}
