"""Train din_fast's packaged default weights (the recipe; its results are in din_fast/weights/README.md).

A small DeFiAN (``defian-s`` with channels=32, rcabs=4, modules=2) trained from scratch with L1 + Adam on
scikit-image's bundled sample images (offline, no download), bicubic (MATLAB-compatible) degradation,
LR quantised to uint8 as real LR images are. ``astronaut``, ``chelsea`` (and its duplicate ``cat``) and
``coffee`` are held out for validation and never trained on.

    python scripts/train_default_weights.py --scale 2 --out din_fast/weights/default_x2.safetensors
    python scripts/train_default_weights.py --scale 4 --out din_fast/weights/default_x4.safetensors

The weights file is rewritten (atomically) every ``--save-every`` steps and at the end, with the held-out
Y-PSNR against bicubic in its header, so a run stopped early still leaves a valid, measured file.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

import din_fast
from din_fast.inference.metrics import psnr, quantize
from din_fast.io.degrade import imresize
from din_fast.models.native import save_model

MODEL = "defian-s"
CONFIG = {"channels": 32, "rcabs": 4, "modules": 2}
TRAIN_IMAGES = ("camera", "rocket", "hubble_deep_field", "immunohistochemistry", "coins", "moon", "page", "text",
                "retina", "colorwheel", "stereo_motorcycle", "brick", "grass", "gravel", "clock", "cell")
HELD_OUT = ("astronaut", "chelsea", "coffee")


def sample_image(name: str) -> np.ndarray:
    """A scikit-image sample image as uint8 HxWx3 RGB (grey replicated; the stereo pair's left view)."""
    from skimage import data

    img = getattr(data, name)()
    if isinstance(img, tuple):
        img = img[0]
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (img.astype(np.float64) * (255.0 / max(float(img.max()), 1e-12))).round().astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def hr_lr_pair(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR cropped to a multiple of ``scale``, LR = uint8-rounded MATLAB bicubic downscale), both uint8."""
    h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
    hr = hr[:h, :w]
    lr = np.clip(np.round(imresize(hr, 1.0 / scale)), 0, 255).astype(np.uint8)
    return hr, lr


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).float().div(255.0)


@torch.inference_mode()
def held_out_psnr(model: torch.nn.Module, scale: int) -> list[tuple[str, float, float]]:
    """Per held-out image: (name, model Y-PSNR, bicubic Y-PSNR), border crop ``scale`` (SR convention)."""
    rows = []
    for name in HELD_OUT:
        hr, lr = hr_lr_pair(sample_image(name), scale)
        sr = quantize(model(to_tensor(lr)[None])[0])
        bicubic = quantize(np.clip(imresize(lr, scale) / 255.0, 0.0, 1.0))
        rows.append((name, psnr(sr, hr, crop_border=scale), psnr(bicubic, hr, crop_border=scale)))
    return rows


def batches(pairs: list[tuple[torch.Tensor, torch.Tensor]], scale: int, batch: int, patch: int,
            generator: torch.Generator):
    """Endless random (LR, HR) patch batches, images drawn in proportion to their area, with flips and
    90° rotations."""
    areas = torch.tensor([float(lr.shape[1] * lr.shape[2]) for lr, _ in pairs])
    while True:
        lrs, hrs = [], []
        for i in torch.multinomial(areas, batch, replacement=True, generator=generator).tolist():
            lr, hr = pairs[i]
            y = int(torch.randint(lr.shape[1] - patch + 1, (1,), generator=generator))
            x = int(torch.randint(lr.shape[2] - patch + 1, (1,), generator=generator))
            lp = lr[:, y:y + patch, x:x + patch]
            hp = hr[:, y * scale:(y + patch) * scale, x * scale:(x + patch) * scale]
            k, flip = torch.randint(4, (1,), generator=generator).item(), torch.rand(1, generator=generator) < 0.5
            lp, hp = torch.rot90(lp, k, (1, 2)), torch.rot90(hp, k, (1, 2))
            if flip:
                lp, hp = lp.flip(2), hp.flip(2)
            lrs.append(lp)
            hrs.append(hp)
        yield torch.stack(lrs), torch.stack(hrs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=32, help="LR patch size")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (cosine decay to 1%%)")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop (and save) after this many steps of the --steps schedule")
    parser.add_argument("--save-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    pairs = [tuple(to_tensor(a) for a in hr_lr_pair(sample_image(n), args.scale)[::-1]) for n in TRAIN_IMAGES]
    model = din_fast.create_model(MODEL, args.scale, **CONFIG)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    data = batches(pairs, args.scale, args.batch, args.patch, generator)

    def checkpoint(step: int) -> None:
        model.eval()
        rows = held_out_psnr(model, args.scale)
        model.train()
        gain = float(np.mean([m - b for _, m, b in rows]))
        recipe = {"script": "scripts/train_default_weights.py",
                  **{k: v for k, v in vars(args).items() if k not in ("out", "stop_after")},
                  "trained_steps": step, "train_images": list(TRAIN_IMAGES), "held_out": list(HELD_OUT)}
        held_out = {n: {"psnr_y": round(m, 3), "bicubic_psnr_y": round(b, 3)} for n, m, b in rows}
        save_model(model, args.out, extra={"recipe": recipe, "held_out": held_out, "mean_gain_db": round(gain, 3)})
        print(f"step {step}: held-out Y-PSNR gain over bicubic {gain:+.3f} dB "
              + ", ".join(f"{n} {m:.2f}/{b:.2f}" for n, m, b in rows), flush=True)

    start, running = time.perf_counter(), 0.0
    model.train()
    last = args.steps if args.stop_after is None else min(args.stop_after, args.steps)
    for step in range(1, last + 1):
        lr_batch, hr_batch = next(data)
        loss = F.l1_loss(model(lr_batch), hr_batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % 50 == 0:
            print(f"step {step}/{args.steps} loss {running:.4f} {(time.perf_counter() - start) / step:.2f} s/step",
                  flush=True)
        if step % args.save_every == 0 or step == last:
            checkpoint(step)


if __name__ == "__main__":
    main()
