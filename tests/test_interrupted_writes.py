"""Killed runs leave nothing that trips the next one (issue 19 item 3): SIGTERM deletes the temporary file
of the write in progress (as SIGINT does), folder listings skip dotfiles and our temporary names, and a
temporary file left by SIGKILL is deleted by the next run into that folder, unless a live process holds it.

The runs are real ``din-fast upscale`` processes; Pillow's save is slowed down in them (after it has
written the temporary file) so that the signal arrives while the output is being written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from din_fast import create_model
from din_fast.cli import main
from din_fast.io.atomic import atomic_path, is_temporary_name, remove_stale_temporaries
from din_fast.io.images import find_images
from din_fast.models.native import save_model

TINY_DIN = dict(num_features=8, growth_rate=4, branches=2, blocks=1, rdbs=2)

# din-fast upscale with a Pillow save that prints WRITING once the temporary file is written, then waits
_SLOW_SAVE = textwrap.dedent("""
    import sys, time
    from PIL import Image
    save = Image.Image.save
    def slow(self, fp, *args, **kwargs):
        save(self, fp, *args, **kwargs)
        print("WRITING", flush=True)
        time.sleep(120)
    Image.Image.save = slow
    from din_fast.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny_din_x2.safetensors"
    torch.manual_seed(0)
    save_model(create_model("din", scale=2, **TINY_DIN), str(path))
    return path


@pytest.fixture
def inputs(tmp_path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 8, 3), dtype=np.uint8)).save(src / name)
    return src


def _killed_mid_write(src: Path, out: Path, weights: Path, sig: signal.Signals) -> subprocess.CompletedProcess:
    """Run din-fast upscale SRC -o OUT, send ``sig`` while the first output is being written."""
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, "upscale", str(src), "-o", str(out),
                             "--weights", str(weights)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "WRITING", proc.stderr.read()
        temporaries = [p.name for p in out.iterdir()]
        assert len(temporaries) == 1 and is_temporary_name(temporaries[0]), temporaries
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_sigterm_removes_the_temporary_file(tmp_path, inputs, weights):
    out = tmp_path / "out"
    result = _killed_mid_write(inputs, out, weights, signal.SIGTERM)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "din-fast: terminated"
    assert list(out.iterdir()) == []


def test_after_sigkill_the_next_runs_neither_read_nor_keep_the_leftover(tmp_path, inputs, weights, capsys):
    out = tmp_path / "out"
    result = _killed_mid_write(inputs, out, weights, signal.SIGKILL)
    assert result.returncode == -signal.SIGKILL
    (leftover,) = out.iterdir()  # nothing can clean up after SIGKILL
    assert is_temporary_name(leftover.name)
    # reading the output folder as an input: the leftover is not an image to upscale
    assert main(["upscale", str(out), "-o", str(tmp_path / "again"), "--weights", str(weights)]) != 0
    assert "no images in folder" in capsys.readouterr().err
    # the next run into the folder deletes it and writes everything
    assert main(["upscale", str(inputs), "-o", str(out), "--weights", str(weights)]) == 0
    assert "removed 1 temporary file(s) left in" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]


def test_listing_skips_dotfiles_and_temporary_names(tmp_path):
    for name in ("x.png", ".hidden.png", ".x.abcd_123.tmp.png"):
        Image.new("RGB", (2, 2)).save(tmp_path / name)
    assert [p.name for p in find_images([tmp_path])] == ["x.png"]


def test_a_temporary_file_being_written_by_a_live_process_is_kept(tmp_path):
    with atomic_path(tmp_path / "busy.png") as tmp:
        Path(tmp).write_bytes(b"partial")
        assert remove_stale_temporaries(tmp_path) == []  # locked by this (live) writer
        assert os.path.exists(tmp)
    stale = tmp_path / ".old.q1w2e3r4.tmp.png"
    stale.write_bytes(b"left by a killed run")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy.png"]
