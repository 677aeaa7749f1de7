"""Make din_fast/assets/sample.png, the small input of the README's first command: a 128x128 crop of
scikit-image's bundled ``chelsea`` photograph (public domain; one of the images held out from the default
weights' training, see scripts/train_default_weights.py).

    python scripts/make_sample_image.py
"""

from pathlib import Path

from PIL import Image
from skimage import data

OUT = Path(__file__).resolve().parents[1] / "din_fast" / "assets" / "sample.png"


def main() -> None:
    crop = data.chelsea()[60:188, 120:248]  # the eye and surrounding fur: fine detail where SR shows
    Image.fromarray(crop).save(OUT, optimize=True)
    print(f"wrote {OUT} ({crop.shape[1]}x{crop.shape[0]})")


if __name__ == "__main__":
    main()
