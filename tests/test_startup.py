"""Start-up (issue 21 item 4): ``din-fast --help`` / ``--version`` import no torch, and importing din_fast's
ops does not import torch._dynamo (about a second that a process that never compiles does not need)."""

import subprocess
import sys

import pytest

import din_fast


def _modules_after(code: str) -> set[str]:
    """The modules loaded by a fresh interpreter after running ``code`` (which may exit)."""
    script = ("import atexit, sys\n"
              "atexit.register(lambda: sys.__stdout__.write('\\nMODULES ' + ' '.join(sys.modules)))\n" + code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return set(out.rsplit("MODULES ", 1)[1].split())


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["-h"]])
def test_help_and_version_import_no_torch(argv):
    modules = _modules_after(f"from din_fast.cli import main\nmain({argv!r})")
    assert "din_fast.cli.main" in modules
    assert "torch" not in modules


def test_version_is_the_package_version():
    out = subprocess.run([sys.executable, "-m", "din_fast", "--version"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == f"din-fast {din_fast.__version__}"


def test_subcommand_help_still_lists_its_arguments():
    out = subprocess.run([sys.executable, "-m", "din_fast", "upscale", "--help"], capture_output=True, text=True,
                         check=True)
    assert "--tile" in out.stdout


def test_importing_the_api_does_not_import_dynamo():
    modules = _modules_after("import din_fast\n"
                             "din_fast.ops, din_fast.create_model, din_fast.upscale, din_fast.use_backend")
    assert "din_fast.ops._library" in modules and "torch" in modules
    assert "torch._dynamo" not in modules


def test_bare_import_loads_nothing_heavy():
    assert "torch" not in _modules_after("import din_fast")


def test_lazy_names_are_the_public_api():
    assert set(din_fast.__all__) == {"__version__", *din_fast._LAZY}
    for name in din_fast.__all__:
        assert getattr(din_fast, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        din_fast.nope  # noqa: B018
