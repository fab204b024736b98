"""Where the source checkout is, for test tooling that needs the repository's own files.

The lab and the control-plane harness use files that are in no package: scripts/ (the cached
builds of the pinned scx_layered and control plane), docs/lab.md (the benchmark figures' blocks)
and src/ itself (a guest runs `python -m temper_testing...` from the shared repository, a workload
child gets it on its PYTHONPATH). They are found from this package's place in the checkout,
`<checkout>/src/temper_testing/`. The tooling runs from a checkout only (`make test`, `make
demo`, the bench drivers); anywhere else these files do not exist, and `repo_root` says so
instead of handing back a path that does not hold them.
"""

from __future__ import annotations

from pathlib import Path

# What a checkout holds beside src/: how `repo_root` knows it found one.
CHECKOUT_MARKERS = ("pyproject.toml", "scripts")


class NotACheckoutError(RuntimeError):
    """The test tooling is not running from a source checkout of Temper."""


def repo_root() -> Path:
    """The checkout this package runs from: `<root>/src/temper_testing/`, with pyproject.toml
    and scripts/ beside src/. NotACheckoutError when the package is installed anywhere else."""
    package = Path(__file__).resolve().parent
    root = package.parents[1]
    missing = [name for name in CHECKOUT_MARKERS if not (root / name).exists()]
    if package.parent.name != "src" or missing:
        raise NotACheckoutError(
            f"temper_testing at {package} is not in a source checkout of Temper (expected "
            f"<checkout>/src/temper_testing with pyproject.toml and scripts/ beside src/): "
            "the test tooling runs from a git checkout, e.g. `make test` or `make demo`"
        )
    return root


def src_dir() -> Path:
    """The checkout's src/: the directory holding `temper` and `temper_testing`."""
    return repo_root() / "src"
