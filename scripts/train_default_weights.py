"""Train din_fast's packaged default weights with ``din-fast train`` (the recipe; results in
din_fast/weights/README.md), and measure them.

Data: ``scripts/prepare_training_data.py --out DATA`` (natural photographs from Debian wallpaper packages
and scikit-image, HR <= 1280 px, uint8 MATLAB-bicubic LR per scale). The held-out photographs are never
trained on; ``din_fast/weights/heldout/`` holds one 192 x 192 crop of each, the validation set here and
the test set of ``tests/test_default_weights.py``.

Stages (each a ``din-fast train`` run in ``RUNS/x{s}``, resumed if it was stopped): x2 from scratch, then
x3 and x4 fine-tuned from the x2 weights (``--init``: everything but the upsampler and output layers).
Each run's ``last.safetensors`` (not the one best on the held-out crops, which would select on the test
set) is written to ``din_fast/weights/default_x{s}.safetensors`` with the recipe and the held-out gains
in its header.

    # from the repository root
    python scripts/prepare_training_data.py --out data/photos --crops din_fast/weights/heldout
    python scripts/train_default_weights.py --data data/photos --runs runs/default
    python scripts/train_default_weights.py --data data/photos --runs runs/default --export-only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import din_fast
from din_fast.train.data import list_images, read_image
from din_fast.io.degrade import imresize, round_uint8
from din_fast.inference.metrics import psnr, quantize
from din_fast.models.native import save_model

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "din_fast" / "weights"
HELD_OUT_CROPS = WEIGHTS / "heldout"
MODEL = "defian-s"
CONFIG = {"channels": 32, "rcabs": 4, "modules": 2}
SEED = 0
# per scale: LR patch, steps, peak learning rate, multi-step decay points (x0.3 each), init from
STAGES = {
    2: {"patch": 32, "steps": 2400, "learning_rate": 5e-4, "milestones": [1800], "init": None},
    3: {"patch": 24, "steps": 3000, "learning_rate": 2.5e-4, "milestones": [2000, 2600], "init": 2},
    4: {"patch": 24, "steps": 1000, "learning_rate": 2.5e-4, "milestones": [600, 850], "init": 2},
}
BATCH = 16
GAMMA = 0.3
EVERY = 250  # validation and checkpoint interval (steps)


def train_command(scale: int, data: Path, runs: Path) -> list[str]:
    """The ``din-fast train`` command line of one stage (run in the repository root)."""
    stage = STAGES[scale]
    command = ["din-fast", "train", "--model", MODEL, "--scale", str(scale),
               *[a for k, v in CONFIG.items() for a in ("--model-arg", f"{k}={v}")],
               "--hr", str(data / "hr"), "--lr", str(data / f"lr_x{scale}"),
               "--val", str(HELD_OUT_CROPS.relative_to(ROOT)), "--out", str(runs / f"x{scale}"),
               "--steps", str(stage["steps"]), "--batch", str(BATCH),
               "--patch", str(stage["patch"]), "--learning-rate", str(stage["learning_rate"]),
               "--schedule", "multistep", "--milestones", *map(str, stage["milestones"]),
               "--gamma", str(GAMMA),
               "--workers", "0", "--seed", str(SEED), "--val-every", str(EVERY), "--ckpt-every", str(EVERY),
               "--log-every", "50"]
    if stage["init"] is not None:
        command += ["--init", str(runs / f"x{stage['init']}" / "last.safetensors")]
    return command


def lr_of(hr: np.ndarray, scale: int) -> np.ndarray:
    """uint8 MATLAB bicubic ``1/scale`` reduction (``hr`` cropped to a multiple of ``scale``), and that HR."""
    h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
    return round_uint8(imresize(hr[:h, :w], 1.0 / scale)), hr[:h, :w]


@torch.inference_mode()
def held_out_psnr(model: torch.nn.Module, scale: int, folder: Path = HELD_OUT_CROPS
                  ) -> list[tuple[str, float, float]]:
    """Per image of ``folder``: (name, model Y-PSNR, MATLAB-bicubic Y-PSNR), border ``scale`` cropped.

    LR = uint8 MATLAB bicubic reduction of the HR image; the model output is quantised to uint8."""
    rows = []
    for path in list_images(folder):
        lr, hr = lr_of(read_image(path), scale)
        x = torch.from_numpy(lr).permute(2, 0, 1).float().div(255.0)[None]
        sr = quantize(model(x)[0])
        bicubic = round_uint8(imresize(lr, scale))
        rows.append((path.stem, psnr(sr, hr, crop_border=scale), psnr(bicubic, hr, crop_border=scale)))
    return rows


def mean_gain(rows: list[tuple[str, float, float]]) -> float:
    return float(np.mean([m - b for _, m, b in rows]))


def _table(rows: list[tuple[str, float, float]]) -> dict[str, dict[str, float]]:
    return {n: {"psnr_y": round(m, 3), "bicubic_psnr_y": round(b, 3)} for n, m, b in rows}


def export(scale: int, data: Path, runs: Path, out: Path) -> None:
    """Write RUNS/x{s}/last.safetensors to ``out``, the recipe and held-out gains in its header."""
    last = runs / f"x{scale}" / "last.safetensors"
    model = din_fast.load_model(str(last)).eval()
    crops = held_out_psnr(model, scale)
    recipe = {"script": "scripts/train_default_weights.py", "data": "scripts/prepare_training_data.py",
              "command": train_command(scale, data, runs)}
    extra = {"recipe": recipe,
             "trained_steps": int(din_fast.models.native.read_header(str(last))["extra"]["step"]),
             "held_out_crops": _table(crops), "mean_gain_db": round(mean_gain(crops), 3)}
    summary = f"x{scale}: {out}: held-out crops {mean_gain(crops):+.3f} dB"
    if (data / "heldout").is_dir():
        whole = held_out_psnr(model, scale, data / "heldout")
        extra["held_out_photographs"] = _table(whole)
        extra["photographs_mean_gain_db"] = round(mean_gain(whole), 3)
        summary += f", whole photographs {mean_gain(whole):+.3f} dB"
    save_model(model, str(out), extra=extra)
    print(summary, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the prepare_training_data.py --out folder")
    parser.add_argument("--runs", type=Path, required=True, help="folder of the three run directories")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4, 3], choices=sorted(STAGES),
                        help="stages in this order (x3 and x4 need x2's weights)")
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="where default_x{s}.safetensors go")
    parser.add_argument("--export-only", action="store_true", help="only measure and write the weights")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    for scale in args.scales:
        if not args.export_only:
            command = train_command(scale, args.data, args.runs)
            if (args.runs / f"x{scale}" / "state.pt").is_file():
                command.append("--resume")
            print(" ".join(command), flush=True)
            before, start = os.times(), time.perf_counter()
            if subprocess.run(command, env=env, cwd=ROOT).returncode != 0:
                sys.exit(f"x{scale}: din-fast train failed")
            after = os.times()
            cpu = after.children_user + after.children_system - before.children_user - before.children_system
            wall = time.perf_counter() - start
            print(f"x{scale}: trained ({cpu:.0f} CPU s, {wall:.0f} s wall)", flush=True)
        export(scale, args.data, args.runs, args.weights / f"default_x{scale}.safetensors")


if __name__ == "__main__":
    main()
