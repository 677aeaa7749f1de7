"""Random arguments for every fused op, shared by the op, kernel and benchmark tests.

Each builder returns the op's positional arguments (lists for Tensor[] arguments). Parameters are
drawn at scales that keep activations O(1), so float tolerances stay meaningful.
"""

import torch

from din_fast.ops.dilated_encdec import BIAS_SHAPES, WEIGHT_SHAPES


def _randn(*shape, scale=1.0, dtype=torch.float64, device="cpu", generator=None):
    return torch.randn(*shape, dtype=dtype, device=device, generator=generator) * scale


def asyca_args(b=2, c=8, h=5, w=7, reduction=4, dtype=torch.float64, device="cpu", generator=None):
    r = max(c // reduction, 1)
    kw = dict(dtype=dtype, device=device, generator=generator)
    return [_randn(b, c, h, w, **kw), _randn(b, c, h, w, **kw),
            _randn(c, 2 * c, 1, 1, scale=(2 * c) ** -0.5, **kw), _randn(c, scale=0.1, **kw),
            _randn(r, c, 1, 1, scale=c ** -0.5, **kw), _randn(r, scale=0.1, **kw),
            _randn(2 * c, r, 1, 1, scale=r ** -0.5, **kw), _randn(2 * c, scale=0.1, **kw)]


def channel_attention_residual_args(b=2, c=16, h=5, w=7, reduction=8, dtype=torch.float64, device="cpu",
                                    generator=None):
    """t with a random offset per plane, so that the channel means (the MLP's input) are O(1)."""
    r = max(c // reduction, 1)
    kw = dict(dtype=dtype, device=device, generator=generator)
    return [_randn(b, c, h, w, **kw), _randn(b, c, h, w, **kw) + _randn(b, c, 1, 1, **kw),
            _randn(r, c, 1, 1, scale=c ** -0.5, **kw), _randn(r, scale=0.1, **kw),
            _randn(c, r, 1, 1, scale=r ** -0.5, **kw), _randn(c, scale=0.1, **kw)]


def conv3x3_args(b=2, cin=5, cout=7, h=9, w=13, dtype=torch.float64, device="cpu", generator=None):
    """He-scaled weights (outputs O(1)) and non-zero biases."""
    kw = dict(dtype=dtype, device=device, generator=generator)
    return [_randn(b, cin, h, w, **kw), _randn(cout, cin, 3, 3, scale=(9 * cin) ** -0.5, **kw),
            _randn(cout, scale=0.1, **kw)]


def dense_block_args(b=2, c=5, g=3, n=6, cout=None, h=6, w=7, dtype=torch.float64, device="cpu", generator=None):
    """x (B, C, H, W); n convs: weights[i] (G, C + iG, 3, 3), the last (Cout, C + (n−1)G, 3, 3) with
    Cout = C by default (DIN's RDB); conv-sized weights (scale 1/sqrt(9·Cin)) keep the features O(1)."""
    kw = dict(dtype=dtype, device=device, generator=generator)
    cout = c if cout is None else cout
    outs = [g] * (n - 1) + [cout]
    weights = [_randn(o, c + i * g, 3, 3, scale=(9 * (c + i * g)) ** -0.5, **kw) for i, o in enumerate(outs)]
    return [_randn(b, c, h, w, **kw), weights, [_randn(o, scale=0.1, **kw) for o in outs]]


def dwc_sum_args(k=3, b=2, c=8, h=5, w=7, dtype=torch.float64, device="cpu", generator=None):
    kw = dict(dtype=dtype, device=device, generator=generator)
    return [[_randn(b, c, h, w, **kw) for _ in range(k)], _randn(k, c, **kw), _randn(c, **kw)]


def mshf_args(b=2, c=8, h=5, w=7, dtype=torch.float64, device="cpu", generator=None):
    """General (non-analytic) Hessian weights and non-zero biases, as a trained checkpoint has."""
    kw = dict(dtype=dtype, device=device, generator=generator)
    return [_randn(b, c, h, w, **kw), _randn(3, 3, c, 3, 3, scale=0.5, **kw), _randn(3, 3, c, scale=0.3, **kw)]


def dilated_encdec_args(b=2, h=5, w=7, dtype=torch.float64, device="cpu", generator=None):
    kw = dict(dtype=dtype, device=device, generator=generator)
    weights = [_randn(*s, scale=(s[1] * s[2] * s[3]) ** -0.5 * 1.5, **kw) for s in WEIGHT_SHAPES]
    biases = [_randn(*s, scale=0.1, **kw) for s in BIAS_SHAPES]
    return [_randn(b, 3, h, w, **kw), weights, biases]


def dac_gate_args(b=2, c=16, h=5, w=7, reduction=16, dtype=torch.float64, device="cpu", generator=None):
    r = max(c // reduction, 1)
    kw = dict(dtype=dtype, device=device, generator=generator)
    return [_randn(b, c, h, w, **kw), _randn(b, c, h, w, **kw), _randn(b, 1, h, w, **kw),
            _randn(r, c, 1, 1, scale=c ** -0.5, **kw), _randn(c, r, 1, 1, scale=r ** -0.5, **kw),
            _randn(r, c, 1, 1, scale=c ** -0.5, **kw), _randn(c, r, 1, 1, scale=r ** -0.5, **kw)]


def criss_cross_attention_args(b=2, c=8, h=5, w=7, cq=3, dtype=torch.float64, device="cpu", generator=None):
    """q, k scaled so that energies are O(1) (softmax neither flat nor one-hot)."""
    kw = dict(dtype=dtype, device=device, generator=generator)
    return [_randn(b, cq, h, w, scale=cq ** -0.25, **kw), _randn(b, cq, h, w, scale=cq ** -0.25, **kw),
            _randn(b, c, h, w, **kw)]


def channel_spatial_attention_args(b=2, c=16, h=5, w=7, reduction=16, dtype=torch.float64, device="cpu",
                                   generator=None):
    r = max(c // reduction, 1)
    kw = dict(dtype=dtype, device=device, generator=generator)
    return [_randn(b, c, h, w, **kw), _randn(b, c, h, w, **kw),
            _randn(r, c, 1, 1, scale=c ** -0.5, **kw), _randn(r, scale=0.1, **kw),
            _randn(c, r, 1, 1, scale=r ** -0.5, **kw), _randn(c, scale=0.1, **kw),
            _randn(1, 2, 7, 7, scale=98 ** -0.5 * 2, **kw), _randn(1, scale=0.1, **kw)]


ARGS = {"asyca": asyca_args, "channel_attention_residual": channel_attention_residual_args, "conv3x3": conv3x3_args, "dwc_sum": dwc_sum_args, "mshf": mshf_args, "dilated_encdec": dilated_encdec_args,
        "dac_gate": dac_gate_args, "criss_cross_attention": criss_cross_attention_args,
        "channel_spatial_attention": channel_spatial_attention_args}


def flat(args):
    """The tensors of an argument list, lists expanded (for gradcheck)."""
    return [t for a in args for t in (a if isinstance(a, list) else [a])]


def rebuild(args, tensors):
    """Inverse of ``flat``: put ``tensors`` back into ``args``'s structure."""
    out, i = [], 0
    for a in args:
        if isinstance(a, list):
            out.append(list(tensors[i:i + len(a)]))
            i += len(a)
        else:
            out.append(tensors[i])
            i += 1
    return out


def cast(args, dtype):
    """A copy of ``args`` with every tensor converted to ``dtype``."""
    return rebuild(args, [t.to(dtype) for t in flat(args)])


def requiring_grad(args):
    """A copy of ``args`` whose tensors are leaves that require grad."""
    return rebuild(args, [t.detach().clone().requires_grad_(True) for t in flat(args)])


#: Small shapes for float64 gradcheck (full Jacobians), per op: odd sizes, batch 2.
GRAD_SHAPES = {"asyca": dict(b=2, c=4, h=3, w=5, reduction=2),
               "channel_attention_residual": dict(b=2, c=4, h=3, w=5, reduction=2),
               "conv3x3": dict(b=2, cin=3, cout=2, h=6, w=5),
               "dwc_sum": dict(k=3, b=2, c=3, h=3, w=5),
               "mshf": dict(b=2, c=2, h=4, w=5), "dilated_encdec": dict(b=1, h=4, w=5),
               "dac_gate": dict(b=2, c=3, h=3, w=4, reduction=3),
               "criss_cross_attention": dict(b=2, c=3, h=3, w=4, cq=2),
               "channel_spatial_attention": dict(b=2, c=4, h=3, w=4, reduction=2)}

#: Shapes for GPU kernels (tests/test_gpu_kernels.py, the sanitizer calls of scripts/gpu_check.py): odd
#: sizes large enough for several thread blocks along every grid dimension and tiles that straddle the
#: border, C not a multiple of 8, B = 2; small enough for compute-sanitizer.
GPU_SHAPES = {"asyca": dict(b=2, c=33, h=37, w=41, reduction=4),
              "channel_attention_residual": dict(b=2, c=33, h=37, w=41, reduction=8),
              "conv3x3": dict(b=2, cin=5, cout=7, h=37, w=41),
              "dwc_sum": dict(k=3, b=2, c=33, h=37, w=41),
              "mshf": dict(b=2, c=33, h=37, w=41), "dilated_encdec": dict(b=2, h=37, w=41),
              "dac_gate": dict(b=2, c=33, h=37, w=41, reduction=16),
              "criss_cross_attention": dict(b=2, c=17, h=37, w=41, cq=3),
              "channel_spatial_attention": dict(b=2, c=33, h=37, w=41, reduction=16)}
