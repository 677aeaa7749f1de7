"""Fetch and prepare the training and held-out photographs of din_fast's default weights, reproducibly.

Sources (all offline-installable, DFSG-free; licences in din_fast/weights/README.md):

* Debian packages, fetched with ``apt-get download PACKAGE=VERSION`` and unpacked with ``dpkg -x`` (no
  installation, no root needed); the ``.deb`` SHA-256 is checked against the value recorded here, so a
  different build of the package stops the script instead of silently changing the data.
* scikit-image's bundled pictures (``skimage.data``; only those shipped in the wheel, no download).

Images from Python packages' sample data (matplotlib, scikit-learn, scipy, imageio) are not used: they
are evaluation images.

Preparation of every photograph: RGB, then MATLAB bicubic (antialiased, ``din_fast.io.degrade.imresize``)
reduction so that the longer side is at most ``MAX_SIDE`` pixels, rounded to uint8 and saved as PNG.
The wallpapers are 1.3-14.7 MP JPEGs whose pixel-level detail is soft and blocky; a reduction gives HR
images whose finest scale is real image detail, which is what the LR -> HR mapping must learn (the
DIV2K / Flickr2K practice of using sharp HR); the HR image is then cropped at the bottom and right to
multiples of 12. For each scale s in 2, 3, 4 the LR image is the MATLAB bicubic ``1/s`` reduction of
the HR image, rounded to uint8 (what ``din-fast train --lr`` reads, and what the evaluation feeds the
model).

Output (``--out DIR``)::

    DIR/hr/NAME.png             training HR photographs
    DIR/lr_x{2,3,4}/NAME.png    their uint8 LR images
    DIR/heldout/NAME.png        the held-out photographs (never trained on), same preparation
    DIR/SOURCES.json            package names, versions, .deb SHA-256, files and sizes

With ``--crops DIR2`` it also writes the held-out crops that the repository ships
(``din_fast/weights/heldout/``): one ``CROP`` x ``CROP`` window per held-out photograph, chosen by rule
(the window on a 48-pixel grid with the largest mean gradient magnitude of the luma, i.e. the most
detailed region, where an upscaler can differ from bicubic at all).

    python scripts/prepare_training_data.py --out data/photos --crops din_fast/weights/heldout
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from din_fast.io.degrade import imresize, round_uint8

MAX_SIDE = 1280
CROP = 192  # divisible by 2, 3 and 4
SCALES = (2, 3, 4)

# package -> (version, SHA-256 of the .deb as fetched from Debian bookworm)
PACKAGES = {
    "mate-backgrounds": ("1.26.0-1", "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04"),
    "plasma-workspace-wallpapers": ("4:5.27.5-2",
                                    "32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b"),
}
_MATE = "usr/share/backgrounds/mate/nature/"
_PLASMA = "usr/share/wallpapers/{}/contents/images/{}"
# name -> (package, path inside the package); photographs only (the packages' drawn art is left out)
PHOTOS = {
    "mate-aqua": ("mate-backgrounds", _MATE + "Aqua.jpg"),
    "mate-blinds": ("mate-backgrounds", _MATE + "Blinds.jpg"),
    "mate-dune": ("mate-backgrounds", _MATE + "Dune.jpg"),
    "mate-freshflower": ("mate-backgrounds", _MATE + "FreshFlower.jpg"),
    "mate-garden": ("mate-backgrounds", _MATE + "Garden.jpg"),
    "mate-greenmeadow": ("mate-backgrounds", _MATE + "GreenMeadow.jpg"),
    "mate-ladybird": ("mate-backgrounds", _MATE + "LadyBird.jpg"),
    "mate-raindrops": ("mate-backgrounds", _MATE + "RainDrops.jpg"),
    "mate-storm": ("mate-backgrounds", _MATE + "Storm.jpg"),
    "mate-twowings": ("mate-backgrounds", _MATE + "TwoWings.jpg"),
    "mate-wood": ("mate-backgrounds", _MATE + "Wood.jpg"),
    "mate-yellowflower": ("mate-backgrounds", _MATE + "YellowFlower.jpg"),
    "plasma-bythewater": ("plasma-workspace-wallpapers", _PLASMA.format("BytheWater", "2560x1600.jpg")),
    "plasma-coldripple": ("plasma-workspace-wallpapers", _PLASMA.format("ColdRipple", "2560x1600.jpg")),
    "plasma-colorfulcups": ("plasma-workspace-wallpapers", _PLASMA.format("ColorfulCups", "2560x1600.jpg")),
    "plasma-darkesthour": ("plasma-workspace-wallpapers", _PLASMA.format("DarkestHour", "2560x1600.jpg")),
    "plasma-eveningglow": ("plasma-workspace-wallpapers", _PLASMA.format("EveningGlow", "2560x1600.jpg")),
    "plasma-fallenleaf": ("plasma-workspace-wallpapers", _PLASMA.format("FallenLeaf", "2560x1600.jpg")),
    "plasma-grey": ("plasma-workspace-wallpapers", _PLASMA.format("Grey", "2560x1600.jpg")),
    "plasma-kite": ("plasma-workspace-wallpapers", _PLASMA.format("Kite", "2560x1600.jpg")),
    "plasma-onestandsout": ("plasma-workspace-wallpapers", _PLASMA.format("OneStandsOut", "2560x1600.jpg")),
    "plasma-path": ("plasma-workspace-wallpapers", _PLASMA.format("Path", "2560x1600.jpg")),
    "plasma-volna": ("plasma-workspace-wallpapers", _PLASMA.format("Volna", "5120x2880.jpg")),
    "plasma-summer1am": ("plasma-workspace-wallpapers", _PLASMA.format("summer_1am", "2560x1600.jpg")),
}
# chosen by content before any model was evaluated on them: macro (flower, insect), a landscape with
# boats and water, architecture, a table of cups
HELD_OUT = ("mate-ladybird", "plasma-eveningglow", "plasma-grey", "plasma-colorfulcups")
# scikit-image's bundled photographs and textures (no 'cat': it is chelsea)
SKIMAGE = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "moon", "brick", "grass", "gravel",
           "stereo_motorcycle", "clock", "immunohistochemistry")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_package(name: str, work: Path) -> Path:
    """``apt-get download`` the recorded version into ``work``, check its SHA-256, unpack; the root."""
    version, expected = PACKAGES[name]
    subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=work, check=True)
    (deb,) = work.glob(f"{name}_*.deb")
    if sha256(deb) != expected:
        raise SystemExit(f"{deb}: SHA-256 {sha256(deb)} is not the recorded {expected}; update PACKAGES "
                         "only after checking the new version's images and licence")
    root = work / name
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def skimage_picture(name: str) -> np.ndarray:
    """A scikit-image picture as uint8 HxWx3 (grey replicated; the stereo pair's left view)."""
    from skimage import data

    img = getattr(data, name)()
    if isinstance(img, tuple):
        img = img[0]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def prepare(img: np.ndarray) -> np.ndarray:
    """Reduce (MATLAB bicubic) so that the longer side is at most MAX_SIDE, uint8, cropped at the bottom
    and right to a multiple of 12 so that every LR image is exactly HR / s for s = 2, 3, 4."""
    factor = MAX_SIDE / max(img.shape[:2])
    if factor < 1:
        img = round_uint8(imresize(img, factor))
    return img[:img.shape[0] - img.shape[0] % 12, :img.shape[1] - img.shape[1] % 12]


def lr_image(hr: np.ndarray, scale: int) -> np.ndarray:
    """uint8 MATLAB bicubic ``1/scale`` reduction of ``hr`` (whose sides are multiples of ``scale``)."""
    return round_uint8(imresize(hr, 1.0 / scale))


def detailed_crop(img: np.ndarray, size: int = CROP, grid: int = 48) -> np.ndarray:
    """The ``size`` x ``size`` window (corners on a ``grid``-pixel lattice) of largest mean luma gradient."""
    y = img.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255.0
    g = np.zeros_like(y)
    g[1:-1, 1:-1] = np.hypot(y[2:, 1:-1] - y[:-2, 1:-1], y[1:-1, 2:] - y[1:-1, :-2])
    best, where = -1.0, (0, 0)
    for top in range(0, img.shape[0] - size + 1, grid):
        for left in range(0, img.shape[1] - size + 1, grid):
            value = float(g[top:top + size, left:left + size].mean())
            if value > best:
                best, where = value, (top, left)
    top, left = where
    return img[top:top + size, left:left + size]


def save_png(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--crops", default=None, help="also write the held-out crops here")
    args = parser.parse_args()
    out = Path(args.out)
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise SystemExit("apt-get and dpkg are needed (Debian or Ubuntu) to fetch the wallpaper packages")
    sources = {"packages": {n: {"version": v, "sha256": s} for n, (v, s) in PACKAGES.items()},
               "max_side": MAX_SIDE, "images": {}}
    with tempfile.TemporaryDirectory() as tmp:
        roots = {name: fetch_package(name, Path(tmp)) for name in PACKAGES}
        items = [(n, p, f) for n, (p, f) in PHOTOS.items()] + [(n, "scikit-image", None) for n in SKIMAGE]
        for name, package, member in items:
            if member is None:
                raw = skimage_picture(name)
            else:
                with Image.open(roots[package] / member) as im:
                    raw = np.asarray(im.convert("RGB"))
            hr = prepare(raw)
            held_out = name in HELD_OUT
            save_png(hr, out / ("heldout" if held_out else "hr") / f"{name}.png")
            if not held_out:
                for s in SCALES:
                    save_png(lr_image(hr, s), out / f"lr_x{s}" / f"{name}.png")
            elif args.crops:
                save_png(detailed_crop(hr), Path(args.crops) / f"{name}.png")
            sources["images"][name] = {"source": package, "file": member, "held_out": held_out,
                                       "original_size": list(raw.shape[1::-1]), "size": list(hr.shape[1::-1])}
            print(f"{name}: {raw.shape[1]}x{raw.shape[0]} -> {hr.shape[1]}x{hr.shape[0]}"
                  + (" (held out)" if held_out else ""), flush=True)
    (out / "SOURCES.json").write_text(json.dumps(sources, indent=1) + "\n")


if __name__ == "__main__":
    main()
