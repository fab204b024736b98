"""One version: the package's (pyproject.toml) is `temper.__version__`, the chart's appVersion
(so the chart's default image tag is the image `make image` builds) and the image's name."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from temper import __version__
from temper_release.image import archive_name

REPO = Path(__file__).resolve().parents[2]


def test_package_module_and_chart_app_version_agree() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    chart = yaml.safe_load((REPO / "charts/temper/Chart.yaml").read_text())
    assert project["version"] == __version__
    assert chart["appVersion"] == __version__
    assert archive_name(__version__) == f"temper-agent-{__version__}.oci.tar"
