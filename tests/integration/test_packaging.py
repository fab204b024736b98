"""The agent's wheel is the product alone, and the test tooling runs from a checkout only.

`pip wheel .` must pack `temper` and nothing else: `temper_testing` (the kernel lab, the
control-plane harness, the fakes), tests/ and bench/ stay out of what ships to every node. The
wheel is built from a copy of the checkout without build leftovers, as a clean clone builds it:
setuptools packs whatever an earlier in-tree build left under build/lib, which would hide or fake
a difference. The editable install the Makefile does must still import `temper_testing` from
src/, and `temper_testing.checkout.repo_root` must refuse a copy that is not in a checkout.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from temper_testing.checkout import repo_root

REPO = Path(__file__).resolve().parents[2]
# What the working tree holds beside the sources and a clean clone does not (.gitignore).
NOT_IN_A_CLONE = (
    ".git",
    ".venv",
    "build",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
)
NOT_SHIPPED = ("temper_testing/", "tests/", "bench/", "scripts/", "docs/")
# The test tooling's old places inside the product package, and any fake module.
TOOLING_IN_PRODUCT = re.compile(r"^temper/(?:lab|kubetest)/|/fake\w*\.py$")
BUILD_TIMEOUT_S = 110  # pytest's own timeout is 120 s; a wheel of ~100 files takes seconds


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The file names in the wheel `pip wheel .` builds from a clean copy of this checkout."""
    source = tmp_path_factory.mktemp("checkout") / "temper"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_IN_A_CLONE))
    out = tmp_path_factory.mktemp("wheel")
    argv = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation"]
    argv += ["--no-index", "--quiet", "--wheel-dir", str(out)]
    build = subprocess.run(
        argv,
        cwd=source,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert build.returncode == 0, f"pip wheel failed:\n{build.stdout}\n{build.stderr}"
    (wheel,) = out.glob("temper-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_the_product_package_only(wheel_files: list[str]) -> None:
    tops = {name.split("/", 1)[0] for name in wheel_files}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"temper"}
    assert [name for name in wheel_files if name.startswith(NOT_SHIPPED)] == []
    assert [name for name in wheel_files if TOOLING_IN_PRODUCT.search(name)] == []


def test_the_wheel_holds_the_agent_the_cli_and_their_data(wheel_files: list[str]) -> None:
    for name in (
        "temper/__init__.py",
        "temper/agent/main.py",
        "temper/cli/agentctl.py",
        "temper/api/v1/agent_pb2.py",
        "temper/examples/node-a/pods.yaml",
    ):
        assert name in wheel_files


def test_the_editable_install_imports_the_tooling_from_src(tmp_path: Path) -> None:
    """Through the venv's own path, not pytest's: what `make demo` and the bench drivers see."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    found = subprocess.run(
        [sys.executable, "-c", "import temper, temper_testing; print(temper_testing.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found) == REPO / "src" / "temper_testing" / "__init__.py"


def test_repo_root_is_this_checkout() -> None:
    assert repo_root() == REPO


def _load_checkout_copy(package: Path) -> ModuleType:
    """temper_testing/checkout.py copied into `package`, imported from there."""
    package.mkdir(parents=True)
    copy = package / "checkout.py"
    shutil.copyfile(REPO / "src" / "temper_testing" / "checkout.py", copy)
    spec = importlib.util.spec_from_file_location("checkout_copy", copy)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_repo_root_refuses_an_installed_copy(tmp_path: Path) -> None:
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    module = _load_checkout_copy(site / "temper_testing")
    with pytest.raises(module.NotACheckoutError, match="not in a source checkout") as raised:
        module.repo_root()
    assert str(site / "temper_testing") in str(raised.value)


def test_repo_root_finds_another_checkout_by_its_layout(tmp_path: Path) -> None:
    module = _load_checkout_copy(tmp_path / "src" / "temper_testing")
    with pytest.raises(module.NotACheckoutError):  # no pyproject.toml, scripts/ beside src/ yet
        module.repo_root()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "scripts").mkdir()
    assert module.repo_root() == tmp_path.resolve()
