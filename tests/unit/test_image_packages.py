"""Which Debian packages go into the agent image (`temper_release.rootfs.closure`): the
dependency closure of what it runs, without the package manager mmdebstrap adds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from temper_release.errors import ReleaseError
from temper_release.rootfs import DebPackage, closure, parse_control


def deb(name: str, depends: str = "", pre: str = "", provides: str = "") -> DebPackage:
    lines = [f"Package: {name}", "Version: 1.0", "Architecture: amd64"]
    lines += [f"Depends: {depends}"] * bool(depends) + [f"Pre-Depends: {pre}"] * bool(pre)
    lines += [f"Provides: {provides}"] * bool(provides)
    return DebPackage(name, "1.0", "amd64", "\n".join(lines) + "\n", Path(f"{name}.deb"))


def names(packages: list[DebPackage]) -> list[str]:
    return [p.name for p in packages]


def test_control_paragraphs_join_continuation_lines() -> None:
    fields = parse_control("Package: a\nDescription: short\n long line\n .\nVersion: 2:1.0-1\n")
    assert fields == {"Package": "a", "Description": "short\nlong line\n.", "Version": "2:1.0-1"}


def test_closure_follows_depends_and_pre_depends_with_versions_and_arch_qualifiers() -> None:
    fetched = [
        deb("python3.11-minimal", depends="libc6 (>= 2.34), libz1:any", pre="libexpat1"),
        deb("libc6"),
        deb("libz1", depends="libc6"),
        deb("libexpat1"),
        deb("unrelated"),
    ]
    assert names(closure(fetched, ["python3.11-minimal"])) == [
        "libc6",
        "libexpat1",
        "libz1",
        "python3.11-minimal",
    ]


def test_an_alternative_is_met_by_the_first_present_by_name_or_provides() -> None:
    fetched = [
        deb("stdlib", depends="media-types | mime-support, libmail"),
        deb("media-types"),
        deb("mime-support"),
        deb("exim-lite", provides="libmail (= 1)"),
    ]
    assert names(closure(fetched, ["stdlib"])) == ["exim-lite", "media-types", "stdlib"]


def test_the_package_manager_stays_out_even_when_a_package_names_it() -> None:
    # readline-common in bookworm: `Depends: dpkg (>= 1.15.4) | install-info`, for maintainer
    # scripts that never run in the image.
    fetched = [
        deb("readline-common", depends="dpkg (>= 1.15.4) | install-info"),
        deb("dpkg", depends="tar (>= 1.28-1)"),
        deb("tar"),
    ]
    assert names(closure(fetched, ["readline-common"])) == ["readline-common"]


def test_a_dependency_nobody_downloaded_is_an_error_naming_it() -> None:
    with pytest.raises(ReleaseError, match=re.escape("a depends on b | c, and none of them")):
        closure([deb("a", depends="b | c")], ["a"])
    with pytest.raises(ReleaseError, match="package x is wanted but was not downloaded"):
        closure([deb("a")], ["x"])
