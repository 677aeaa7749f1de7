"""Tests for din_fast.train: short real runs of tiny models on generated images (CPU)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import din_fast
from din_fast.cli import main as cli_main
from din_fast.train.trainer import TrainConfig, init_from, load_config, train

TINY_DIN = dict(num_features=8, growth_rate=4, branches=2, blocks=2, rdbs=1, reduction=2)
TINY_DIN_ARGS = [a for k, v in TINY_DIN.items() for a in ("--model-arg", f"{k}={v}")]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convolutions: one thread avoids OpenMP oversubscription on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_images(folder: Path, count: int, shape: tuple[int, int], seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        # Smooth images (low-frequency) so that a few steps of a tiny model can learn something.
        small = rng.integers(0, 256, (shape[0] // 4 + 1, shape[1] // 4 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((shape[1], shape[0]), Image.BICUBIC)
        img.save(folder / f"{i:03d}.png")
    return folder


def read_log(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def tiny_config(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(model="din", scale=2, hr=str(make_images(tmp_path / "hr", 3, (24, 20))), out=str(tmp_path / "run"),
                steps=4, batch=2, patch=6, workers=0, log_every=1, model_args=dict(TINY_DIN))
    return TrainConfig(**{**base, **kw})


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_loss_decreases_on_a_fixed_batch(tmp_path):
    """One image exactly one patch large, no augmentation: every batch is the same; the loss must fall."""
    hr = make_images(tmp_path / "hr", 1, (12, 12))
    config = TrainConfig(model="din", scale=2, hr=str(hr), out=str(tmp_path / "run"), steps=25, batch=2, patch=6,
                         augment=False, learning_rate=2e-3, workers=0, log_every=1, model_args=dict(TINY_DIN))
    train(config)
    losses = [float(r["loss"]) for r in read_log(tmp_path / "run")]
    assert len(losses) == 25
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_run_directory_and_checkpoint_round_trip(tmp_path):
    val = make_images(tmp_path / "val", 2, (18, 16), seed=1)
    config = tiny_config(tmp_path, val=str(val), val_every=2, ckpt_every=2, steps=5, schedule="multistep",
                         milestones=[2, 4], gamma=0.1, grad_clip=0.5, betas=(0.8, 0.99))
    result = train(config)
    run = Path(config.out)
    assert sorted(p.name for p in run.iterdir()) == ["best.safetensors", "config.yaml", "last.safetensors",
                                                     "log.csv", "plot.png", "state.pt"]
    # last.safetensors is the final model and rebuilds through din_fast.load_model.
    loaded = din_fast.load_model(str(run / "last.safetensors"))
    assert loaded.model_name == "din" and loaded.config == result.model.config
    for key, value in result.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.rand(1, 3, 7, 9)
    assert torch.equal(loaded.eval()(x), result.model.eval()(x))
    # The saved configuration is the resolved one and reads back to the same TrainConfig.
    assert TrainConfig(**load_config(run / "config.yaml")) == config
    # Log: one row per step, multi-step schedule 1e-4 → 1e-5 at step 2 → 1e-6 at step 4, PSNR at 2, 4, 5.
    rows = read_log(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([1e-4, 1e-4, 1e-5, 1e-5, 1e-6])
    psnrs = {int(r["step"]): float(r["val_psnr"]) for r in rows if r["val_psnr"]}
    assert sorted(psnrs) == [2, 4, 5] and result.best_psnr == max(psnrs.values())
    best_header = din_fast.models.native.read_header(str(run / "best.safetensors"))
    assert best_header["extra"]["val_psnr"] == result.best_psnr
    assert (run / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["step"] == 5 and state["next_sample"] == 10
    assert state["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.99)


def test_init_copies_the_matching_tensors_of_another_scale(tmp_path):
    """--init: an x4 run starts from an x2 model's tensors wherever name and shape match; the x4-only
    upsampler stage keeps the seeded initialisation; --resume ignores --init."""
    args = dict(channels=16, rcabs=1, modules=1)
    x2 = din_fast.create_model("defian-s", 2, **args)
    with torch.no_grad():
        for p in x2.parameters():
            p.add_(1.0)  # nothing like a fresh initialisation
    path = tmp_path / "x2.safetensors"
    din_fast.models.native.save_model(x2, str(path))
    config = tiny_config(tmp_path, model="defian-s", scale=4, patch=4, steps=1, learning_rate=1e-12,
                         model_args=args, init=str(path), hr=str(make_images(tmp_path / "hr4", 2, (24, 24))))
    trained = train(config).model.state_dict()
    torch.manual_seed(config.seed)
    fresh = din_fast.create_model("defian-s", 4, **args).state_dict()
    source = x2.state_dict()
    assert {k for k in trained if k not in source or source[k].shape != trained[k].shape} == {"upscale.2.weight"}
    for key, value in trained.items():
        expected = fresh[key] if key == "upscale.2.weight" else source[key]
        assert torch.allclose(value, expected, atol=1e-6), key
    # A resumed run loads its own state, not the --init file.
    resumed = train(dataclasses.replace(config, steps=2, resume=True, init=str(tmp_path / "missing"))).model
    assert resumed.state_dict().keys() == trained.keys()


def test_init_errors(tmp_path):
    other = din_fast.create_model("din", 2, **TINY_DIN)
    path = tmp_path / "din.safetensors"
    din_fast.models.native.save_model(other, str(path))
    with pytest.raises(ValueError, match="weights of din, but this run trains defian-s"):
        init_from(din_fast.create_model("defian-s", 2, channels=16, rcabs=1, modules=1), path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        init_from(other, tmp_path / "missing.safetensors")


def test_config_file_and_flags(tmp_path, capsys):
    hr = make_images(tmp_path / "hr", 2, (16, 16))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": "din", "scale": 2, "hr": str(hr), "steps": 99, "batch": 2, "patch": 4,
                               "workers": 0, "model-args": TINY_DIN, "learning_rate": 3e-4}))
    out = tmp_path / "run"
    assert cli_main(["train", "--config", str(cfg), "--steps", "2", "--out", str(out), "--seed", "5"]) == 0
    saved = load_config(out / "config.yaml")
    assert saved["steps"] == 2 and saved["seed"] == 5 and saved["learning_rate"] == 3e-4
    assert saved["model_args"] == TINY_DIN
    assert "trained din x2 to step 2" in capsys.readouterr().out
    # Resuming picks the saved configuration up; only the new step count is given.
    assert cli_main(["train", "--out", str(out), "--resume", "--steps", "3"]) == 0
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 3
    assert [int(r["step"]) for r in read_log(out)] == [2, 3]  # log_every 100: only the final steps


def test_bad_configurations(tmp_path, capsys):
    config = tiny_config(tmp_path, steps=1)
    train(config)
    with pytest.raises(ValueError, match="already holds a run"):
        train(config)
    with pytest.raises(ValueError, match=r"checkpoint of din x2 .*num_features': 8.*builds din x2 .*num_features': 12"):
        train(tiny_config(tmp_path, steps=2, resume=True, model_args={**TINY_DIN, "num_features": 12}))
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tiny_config(tmp_path, out=str(tmp_path / "fresh"), resume=True))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        train(tiny_config(tmp_path, out=str(tmp_path / "amp"), amp=True, device="cpu"))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        tiny_config(tmp_path, steps=0).validate()
    bad = tmp_path / "bad.yaml"
    bad.write_text("stepz: 3\n")
    with pytest.raises(ValueError, match="unknown option 'stepz'"):
        load_config(bad)
    assert cli_main(["train", "--hr", str(tmp_path / "missing"), "--out", str(tmp_path / "r2"), "--scale", "2"]) == 1
    assert "din-fast train: error: image folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["train", "--model-arg", "novalue"])


def test_kill_and_resume_reaches_the_same_weights(tmp_path):
    """SIGKILL a run after a checkpoint; resuming it ends bit-identical to an uninterrupted run."""
    hr = make_images(tmp_path / "hr", 3, (24, 20))
    common = ["--model", "din", "--scale", "2", "--hr", str(hr), "--batch", "2", "--patch", "6",
              "--degradation", "DN", "--schedule", "step", "--step-size", "2", "--gamma", "0.9",
              "--learning-rate", "1e-3", "--log-every", "1", "--ckpt-every", "2", "--seed", "3", *TINY_DIN_ARGS]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "din_fast", "train", *common, "--steps", "100000",
                             "--workers", "1", "--out", str(killed)],
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (killed / "state.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        time.sleep(0.3)  # let it run on past the checkpoint, possibly into the next one
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    step = torch.load(killed / "state.pt", weights_only=True)["step"]
    assert 2 <= step < 100000
    target = str(step + 3)
    # The resumed and the reference run go in-process, with 0 workers: the stream does not depend on it.
    assert cli_main(["train", *common, "--steps", target, "--workers", "0", "--out", str(killed), "--resume"]) == 0
    reference = tmp_path / "reference"
    assert cli_main(["train", *common, "--steps", target, "--workers", "0", "--out", str(reference)]) == 0
    a, b = load_file(killed / "last.safetensors"), load_file(reference / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert read_log(killed) == [
        {**r, "elapsed_s": k["elapsed_s"]} for r, k in zip(read_log(reference), read_log(killed), strict=True)]


def test_two_process_gloo_matches_single_process(tmp_path):
    """torchrun, 2 ranks × batch 2 with gloo: identical replicas, and the loss of a batch-4 single run.

    The workers run tests/ddp_worker.py, i.e. ``din_fast.train``'s own path plus saving each replica."""
    hr = make_images(tmp_path / "hr", 3, (24, 20))
    common = ["--model", "din", "--scale", "2", "--hr", str(hr), "--patch", "6", "--steps", "3", "--workers", "0",
              "--log-every", "1", "--learning-rate", "1e-3", "--device", "cpu", *TINY_DIN_ARGS]
    ddp = tmp_path / "ddp"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(REPO / "tests" / "ddp_worker.py"), *common, "--batch", "2", "--out", str(ddp)],
                         env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    single = tmp_path / "single"
    assert cli_main(["train", *common, "--batch", "4", "--out", str(single)]) == 0
    r0, r1 = torch.load(ddp / "rank0.pt"), torch.load(ddp / "rank1.pt")
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    saved = load_file(ddp / "last.safetensors")  # written by rank 0 only, equal to its replica
    assert all(torch.equal(saved[k], r0[k]) for k in saved)
    ddp_loss = [float(r["loss"]) for r in read_log(ddp)]
    single_loss = [float(r["loss"]) for r in read_log(single)]
    # Step 1: same samples, same weights; only the order of the float32 sums differs (a mean of two
    # means), a few float32 roundings. Later steps also carry the rounding-level difference of the
    # all-reduced gradients through Adam, whose normalisation can amplify it: a looser bound.
    assert len(ddp_loss) == len(single_loss) == 3
    np.testing.assert_allclose(ddp_loss[0], single_loss[0], rtol=8 * np.finfo(np.float32).eps)
    np.testing.assert_allclose(ddp_loss, single_loss, rtol=1e-4)


def test_a_fresh_process_loads_the_extension_too():
    """`din-fast train` starts by importing din_fast, not torch: the compiled kernels must still load
    (they link against libtorch, which only importing torch first makes available)."""
    if not din_fast._extension.has_ops():
        pytest.skip("din_fast._C is not built in this install")
    # `import din_fast` is lazy (no torch); the models import din_fast.ops, which loads the kernels.
    run = subprocess.run([sys.executable, "-c", "import sys, din_fast; din_fast.DIN; from din_fast import _extension as e; "
                          "sys.exit(0 if e.has_ops() else e.load_error())"], env=subprocess_env(), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr


class _CreatesAFile:
    """Unpickling this object (pickle's __reduce__ protocol) calls open(marker, "w"): a stand-in for any
    code a planted state.pt could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_resume_refuses_a_planted_state_and_runs_nothing(tmp_path, capsys):
    """A state.pt with an object whose unpickling runs code: resume refuses it in one line naming the
    file, and neither the object's code nor the run (config, log, checkpoints) is touched."""
    config = tiny_config(tmp_path, steps=1)
    train(config)
    run = Path(config.out)
    marker = tmp_path / "code-ran"
    torch.save({"format": 2, "step": 1, "rng": {"numpy": _CreatesAFile(marker)}}, run / "state.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(ValueError, match=r"state\.pt: refused to load: .*io\.open") as info:
        train(tiny_config(tmp_path, steps=2, resume=True))
    assert "\n" not in str(info.value)
    capsys.readouterr()
    code = cli_main(["train", "--out", str(run), "--resume", "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "refused to load" in err and str(run / "state.pt") in err
    assert not marker.exists()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_state_is_plain_data(tmp_path):
    """state.pt loads with weights_only=True; the RNG states are tensors and restore the same draws."""
    import random

    from din_fast.train.resume_state import rng_state, set_rng_state

    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # a cached Gaussian in numpy's state
    saved = rng_state(torch.device("cpu"))
    torch.save(saved, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.standard_normal(3), [random.random() for _ in range(3)])
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.standard_normal(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]
    assert isinstance(saved["numpy"]["key"], torch.Tensor) and isinstance(saved["python"]["words"], torch.Tensor)


@pytest.mark.parametrize("content, message", [
    (b"not a zip", "not a readable resume state"),
    (None, "format 1; this version reads 2"),
    ([1, 2], "not a din_fast resume state"),
])
def test_resume_refuses_unusable_states(tmp_path, content, message):
    from din_fast.train.resume_state import load_state

    path = tmp_path / "state.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save({"format": 1} if content is None else content, path)
    with pytest.raises(ValueError, match=message):
        load_state(path)


def test_elapsed_continues_across_resumes(tmp_path, monkeypatch):
    """log.csv's elapsed_s counts the run's training time, the interrupted part included. A fake clock
    (10 s a reading) makes it deterministic."""
    clock = iter(range(0, 10**6, 10))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))
    train(tiny_config(tmp_path, steps=2))
    train(tiny_config(tmp_path, steps=4, resume=True))
    elapsed = [float(r["elapsed_s"]) for r in read_log(tmp_path / "run")]
    assert len(elapsed) == 4 and elapsed == sorted(elapsed) and len(set(elapsed)) == 4
