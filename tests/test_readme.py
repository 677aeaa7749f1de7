"""The README's two set-up commands are the ones CI and users actually run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    test_command = blocks[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in [line.strip() for line in ci], (test_command, ci)


def test_readme_install_command_pins_torch_and_skips_isolation():
    install = _bash_blocks((ROOT / "README.md").read_text())[0]
    assert "torch==2.13.0" in install and "--no-build-isolation" in install


def test_readme_main_job_upscales_the_bundled_sample(tmp_path):
    """The last part of the install command is the main job; run it (output redirected) and check it."""
    import shlex
    import subprocess
    import sys

    from PIL import Image

    install = _bash_blocks((ROOT / "README.md").read_text())[0]
    job = shlex.split(install.split("&&")[-1])
    assert job[:2] == ["din-fast", "upscale"], job
    args = job[2:]
    out = tmp_path / "sample_x4.png"
    args[args.index("-o") + 1] = str(out)
    scale = int(args[args.index("--scale") + 1])
    subprocess.run([sys.executable, "-m", "din_fast", "upscale", *args], cwd=ROOT, check=True)
    source = Image.open(ROOT / args[0])
    assert Image.open(out).size == (source.width * scale, source.height * scale)
