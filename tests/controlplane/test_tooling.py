"""The control plane's binaries are the pinned versions (versions/*), built by our tooling."""

from __future__ import annotations

import subprocess
from pathlib import Path

from temper_testing.kubetest.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]


def _version_of(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def test_binaries_report_the_pinned_versions(control_plane: ControlPlane) -> None:
    kubernetes = (ROOT / "versions" / "kubernetes").read_text().strip()
    etcd = (ROOT / "versions" / "etcd").read_text().split()[1].split("-")[0]
    helm = (ROOT / "versions" / "helm").read_text().strip()
    binaries = control_plane.binaries
    scheduler = binaries.apiserver.parent / "kube-scheduler"
    assert (
        _version_of([str(binaries.apiserver), "--version"]).strip() == f"Kubernetes v{kubernetes}"
    )
    assert _version_of([str(scheduler), "--version"]).strip() == f"Kubernetes v{kubernetes}"
    assert f"etcd Version: {etcd}" in _version_of([str(binaries.etcd), "--version"])
    assert _version_of([str(binaries.helm), "version", "--short"]).strip() == helm
    status, body = control_plane.request("GET", "/version")
    assert (status, body["gitVersion"]) == (200, f"v{kubernetes}")


def test_wrapper_module_requires_the_pinned_kubernetes() -> None:
    kubernetes = (ROOT / "versions" / "kubernetes").read_text().strip()
    go_mod = (ROOT / "tools" / "control-plane" / "go.mod").read_text()
    assert f"require k8s.io/kubernetes v{kubernetes}\n" in go_mod
    staging = [line for line in go_mod.splitlines() if "=> k8s.io/" in line]
    assert staging
    assert all(line.rstrip().endswith(f"v0.{kubernetes.split('.', 1)[1]}") for line in staging)
