"""Distributed inference: ``torchrun --nproc_per_node 2 -m din_fast upscale`` shards the images."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

import din_fast
from din_fast import create_model, load_model
from din_fast.io.images import read_image
from din_fast.models.native import save_model


def test_two_gloo_processes_write_each_image_once(tmp_path):
    weights = tmp_path / "tiny.safetensors"
    save_model(create_model("din", scale=2, num_features=8, growth_rate=4, branches=2, blocks=1, rdbs=2),
               str(weights))
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (6, 5 + i, 3), dtype=np.uint8)).save(src / f"{i}.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "din_fast", "upscale", str(src), "-o", str(dst), "--weights", str(weights), "--device", "cpu"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    # rank 0 reports the images of both ranks: 5 in total, so none was done twice
    summary = [line for line in result.stdout.splitlines() if line.startswith("upscaled")]
    assert len(summary) == 1 and summary[0].startswith("upscaled 5 image(s)")
    assert "on 2 processes" in summary[0]
    assert sorted(p.name for p in dst.iterdir()) == [f"{i}.png" for i in range(5)]
    model = load_model(str(weights)).eval()
    for i in range(5):
        expected = (din_fast.upscale(model, read_image(src / f"{i}.png").rgb).clamp(0, 1) * 255).round() / 255
        torch.testing.assert_close(read_image(dst / f"{i}.png").rgb, expected, atol=0, rtol=0)
