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
