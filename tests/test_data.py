"""Tests for din_fast.train.data: on-the-fly degradations, pairing, sampling, augmentation and bad input."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from din_fast.io.degrade import bicubic_degrade, blur_degrade, gaussian_kernel
from din_fast.train.data import SRDataset, StepSampler, augment, load_validation_pairs, modcrop


def write_images(folder: Path, shapes: list[tuple[int, int]], seed: int = 0, names: list[str] | None = None) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = []
    for i, (h, w) in enumerate(shapes):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{names[i] if names else f'img{i:02d}'}.png")
        images.append(img)
    return images


def locate(patch: np.ndarray, image: np.ndarray, step: int) -> tuple[int, int]:
    """Top-left corner (multiple of ``step``) where ``patch`` sits in ``image`` (random images: unique)."""
    p = patch.shape[0]
    for y in range(0, image.shape[0] - p + 1, step):
        for x in range(0, image.shape[1] - p + 1, step):
            if np.array_equal(image[y:y + p, x:x + p], patch):
                return y, x
    raise AssertionError("patch not found in the image")


def to_hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("degradation, scale", [("BI", 2), ("BD", 3), ("BI", 4)])
def test_patch_equals_crop_of_degraded_whole_image(tmp_path, degradation, scale):
    """The LR patch is the same crop of the degraded *whole* (modcropped) image, borders included."""
    (img,) = write_images(tmp_path, [(13 * scale + 2, 11 * scale + 1)])
    hr_full = modcrop(img, scale)
    lr_full = (bicubic_degrade if degradation == "BI" else blur_degrade)(hr_full / 255.0, scale)
    ds = SRDataset(tmp_path, scale, patch=5, degradation=degradation, augment=False)
    seen = set()
    for n in range(40):
        lr, hr = ds[n]
        hr_u8 = (hr.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        y, x = locate(hr_u8, hr_full, scale)
        seen.add((y, x))
        expected = lr_full[y // scale: y // scale + 5, x // scale: x // scale + 5]
        # float32 output of a float64 computation: one float32 rounding of values of size ~1.
        np.testing.assert_allclose(to_hwc(lr), expected, rtol=0, atol=2 * np.finfo(np.float32).eps)
    assert any(y == 0 or x == 0 for y, x in seen) and len(seen) > 10  # borders and interior were hit


def test_dn_noise_statistics(tmp_path):
    """DN: LR − bicubic LR is zero-mean Gaussian noise with std σ/255 (σ = 30), independent per sample."""
    (img,) = write_images(tmp_path, [(64, 64)])
    lr_full = bicubic_degrade(img / 255.0, 2)
    ds = SRDataset(tmp_path, 2, patch=16, degradation="DN", augment=False)
    residuals = []
    for n in range(16):
        lr, hr = ds[n]
        y, x = locate((hr.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy(), img, 2)
        residuals.append(to_hwc(lr) - lr_full[y // 2: y // 2 + 16, x // 2: x // 2 + 16])
    noise = np.concatenate([r.ravel() for r in residuals])
    sigma, count = 30 / 255, noise.size
    # Sample mean ~ N(0, σ²/n); sample std ~ σ (1 ± 1/sqrt(2n)); 5 standard errors.
    assert abs(noise.mean()) < 5 * sigma / np.sqrt(count)
    assert abs(noise.std() / sigma - 1) < 5 / np.sqrt(2 * count)
    assert abs(np.corrcoef(residuals[0].ravel(), residuals[1].ravel())[0, 1]) < 5 / np.sqrt(residuals[0].size)


def test_bd_blur_preserves_constant_images(tmp_path):
    """The 7x7 Gaussian sums to 1, so BD (blur + bicubic) maps a flat image to the same flat value."""
    assert gaussian_kernel(7, 1.6).sum() == pytest.approx(1.0, abs=1e-15)
    tmp_path.mkdir(exist_ok=True)
    Image.fromarray(np.full((30, 30, 3), 77, np.uint8)).save(tmp_path / "flat.png")
    lr, _ = SRDataset(tmp_path, 3, patch=6, degradation="BD")[3]
    np.testing.assert_allclose(lr.double().numpy(), 77 / 255, atol=4 * np.finfo(np.float32).eps)


def test_augmentation_modes_are_the_eight_dihedral_maps():
    a = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    outs = [augment([a], m)[0] for m in range(8)]
    assert len({o.tobytes() + bytes(o.shape) for o in outs}) == 8
    rotations = [np.rot90(a, k, axes=(0, 1)) for k in range(4)]
    flips = [r[:, ::-1] for r in rotations]
    assert {o.tobytes() + bytes(o.shape) for o in outs} == {r.tobytes() + bytes(r.shape) for r in rotations + flips}
    with pytest.raises(ValueError, match="0..7"):
        augment([a], 8)


def test_paired_folders_augment_lr_and_hr_together(tmp_path):
    """With an LR folder, LR and HR patches stay aligned after augmentation (LR = 2x2 box mean of HR)."""
    hr_imgs = write_images(tmp_path / "hr", [(24, 20), (20, 28)])
    (tmp_path / "lr").mkdir()
    for i, img in enumerate(hr_imgs):  # DIV2K naming for the first, the bare stem for the second
        lr = img.reshape(img.shape[0] // 2, 2, img.shape[1] // 2, 2, 3).mean((1, 3)).round().astype(np.uint8)
        Image.fromarray(lr).save(tmp_path / "lr" / (f"img{i:02d}x2.png" if i == 0 else f"img{i:02d}.png"))
    ds = SRDataset(tmp_path / "hr", 2, patch=4, lr_dir=tmp_path / "lr")
    for n in range(20):
        lr, hr = ds[n]
        box = (hr * 255).reshape(3, 4, 2, 4, 2).mean((2, 4)).round()
        assert torch.equal((lr * 255).round(), box)


def test_samples_are_a_function_of_seed_and_number(tmp_path):
    write_images(tmp_path, [(20, 20), (24, 18), (22, 22)])
    a = SRDataset(tmp_path, 2, patch=4, degradation="DN", seed=3)
    b = SRDataset(tmp_path, 2, patch=4, degradation="DN", seed=3, cache_bytes=0)  # decode per sample
    assert a.cached and not b.cached
    for n in (0, 5, 17):
        for x, y in zip(a[n], b[n]):
            assert torch.equal(x, y)
    c = SRDataset(tmp_path, 2, patch=4, degradation="DN", seed=4)
    assert not torch.equal(a[0][0], c[0][0])
    # Every epoch visits every image once.
    assert sorted(a.image_index(n) for n in range(3, 6)) == [0, 1, 2]
    loader = torch.utils.data.DataLoader(a, batch_size=2, sampler=StepSampler(2, start_sample=2), num_workers=2)
    lr, hr = next(iter(loader))
    assert torch.equal(lr, torch.stack([a[2][0], a[3][0]]))


def test_step_sampler_shards_the_global_batch():
    single = list(itertools.islice(iter(StepSampler(6, start_sample=12)), 12))
    ranks = [list(itertools.islice(iter(StepSampler(3, start_sample=12, rank=r, world_size=2)), 6)) for r in range(2)]
    for step in range(2):  # each step: rank 0's chunk then rank 1's chunk is the single-process batch
        assert ranks[0][3 * step: 3 * step + 3] + ranks[1][3 * step: 3 * step + 3] == single[6 * step: 6 * step + 6]
    assert single[0] == 12
    with pytest.raises(ValueError, match="rank"):
        StepSampler(2, rank=2, world_size=2)


def test_validation_pairs(tmp_path):
    write_images(tmp_path, [(17, 21)])
    (name, lr, hr), = load_validation_pairs(tmp_path, 2, degradation="DN")
    assert name == "img00.png" and hr.shape == (16, 20, 3) and lr.shape == (1, 3, 8, 10)
    (_, lr2, _), = load_validation_pairs(tmp_path, 2, degradation="DN")
    assert torch.equal(lr, lr2)  # fixed noise: every validation sees the same input


# ------------------------------------------------------------------------------------------ bad input
def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        SRDataset(tmp_path / "nope", 2, 4)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no images"):
        SRDataset(tmp_path / "empty", 2, 4)


def test_image_smaller_than_patch(tmp_path):
    write_images(tmp_path, [(30, 30), (30, 15)])
    with pytest.raises(ValueError, match=r"img01.png is 30x15, smaller than the patch \(8 LR pixels = 16 HR"):
        SRDataset(tmp_path, 2, patch=8)


def test_lr_size_must_match_scale(tmp_path):
    write_images(tmp_path / "hr", [(24, 24)])
    write_images(tmp_path / "lr", [(12, 11)])
    with pytest.raises(ValueError, match=r"LR image .*img00.png is 12x11 but HR image .* is 24x24: at scale 2"):
        SRDataset(tmp_path / "hr", 2, patch=4, lr_dir=tmp_path / "lr")
    write_images(tmp_path / "lr2", [(12, 12)], names=["other"])
    with pytest.raises(ValueError, match="no LR image for img00.png"):
        SRDataset(tmp_path / "hr", 2, patch=4, lr_dir=tmp_path / "lr2")


@pytest.mark.parametrize("cache_bytes", [1 << 30, 0])
def test_corrupt_images_are_skipped_and_counted(tmp_path, cache_bytes):
    write_images(tmp_path, [(20, 20), (20, 20)])
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    good = (tmp_path / "img01.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])  # valid header, broken data
    with pytest.warns(UserWarning, match="skipping") as record:
        ds = SRDataset(tmp_path, 2, patch=4, cache_bytes=cache_bytes)
    assert len(ds) == 2 and sorted(p.name for p in ds.skipped) == ["garbage.png", "truncated.png"]
    assert len(record) == 2
    for p in list(tmp_path.glob("img*.png")):
        p.unlink()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"no readable images .*\(2 skipped\)"):
        SRDataset(tmp_path, 2, patch=4, cache_bytes=cache_bytes)


def test_bad_arguments(tmp_path):
    write_images(tmp_path, [(20, 20)])
    with pytest.raises(ValueError, match="degradation must be one of BI, BD, DN"):
        SRDataset(tmp_path, 2, 4, degradation="XX")
    with pytest.raises(ValueError, match="needs an input folder"):
        SRDataset(tmp_path, 1, 4)
    with pytest.raises(ValueError, match="patch must be a positive integer"):
        SRDataset(tmp_path, 2, 0)
