"""The API contract: committed code and docs follow the .proto; a new surface needs a version note.

scripts/gen-api is the only writer of src/temper/api/v1 and docs/api.md. These tests run its
own check functions, so a .proto edit that was not regenerated, or a change of the public
surface without an entry in proto/CHANGELOG.md, fails here as it fails `scripts/gen-api --check`.
Each protoc run takes a fraction of a second; the tests make six.
"""

from __future__ import annotations

import re
import shutil
import sys
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from temper.api.v1 import agent_pb2

ROOT = Path(__file__).resolve().parents[2]
# The largest field number protobuf allows: no real field will take it.
TEST_FIELD = "  string added_by_test = 536870911;\n"


@pytest.fixture(scope="module")
def gen_api() -> ModuleType:
    """scripts/gen-api as a module: it has no .py suffix, so it is loaded by path.

    It is in sys.modules while it runs only, because dataclasses look their module up there.
    """
    loader = SourceFileLoader("gen_api", str(ROOT / "scripts" / "gen-api"))
    spec = spec_from_loader(loader.name, loader)
    assert spec is not None
    module = module_from_spec(spec)
    sys.modules[loader.name] = module
    try:
        loader.exec_module(module)
    finally:
        del sys.modules[loader.name]
    return module


@pytest.fixture(scope="module")
def committed(gen_api: ModuleType) -> Any:
    """What the repository's own .proto files generate (a gen_api.Generated)."""
    return gen_api.generate_api(ROOT / "proto")


@pytest.fixture
def proto_copy(tmp_path: Path) -> Path:
    """A copy of proto/ that a test may edit."""
    return Path(shutil.copytree(ROOT / "proto", tmp_path / "proto"))


def edit_agent_proto(proto_dir: Path, pattern: str, insert: str) -> None:
    """Insert text where pattern first matches, after the match; fail loudly when it does not."""
    path = proto_dir / "temper" / "api" / "v1" / "agent.proto"
    text = path.read_text(encoding="utf-8")
    match = re.search(pattern, text, flags=re.MULTILINE)
    if match is None:
        pytest.fail(f"no line of {path.name} matches {pattern!r}: update this test's edit")
    path.write_text(text[: match.end()] + insert + text[match.end() :], encoding="utf-8")


def add_field(proto_dir: Path) -> None:
    """Add a field to the first message with a body: a change of the public surface."""
    edit_agent_proto(proto_dir, r"^message \w+ \{\n", TEST_FIELD)


def test_committed_code_and_docs_match_the_proto(gen_api: ModuleType) -> None:
    assert gen_api.check_api(gen_api.default_paths()) == []


def test_an_api_change_without_a_version_note_fails(
    gen_api: ModuleType,
    committed: Any,
    proto_copy: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    add_field(proto_copy)
    fingerprint = gen_api.generate_api(proto_copy).fingerprint
    assert fingerprint != committed.fingerprint

    assert gen_api.main(["--check", "--proto-dir", str(proto_copy)]) == 1
    assert (
        f"the public API changed (fingerprint {fingerprint}) without a version note: "
        "add an entry naming it to proto/CHANGELOG.md"
    ) in capsys.readouterr().out.splitlines()

    changelog = tmp_path / "CHANGELOG.md"
    noted = (ROOT / "proto" / "CHANGELOG.md").read_text(encoding="utf-8")
    changelog.write_text(f"{noted}\n## v1.1 — fingerprint {fingerprint}\n", encoding="utf-8")
    paths = gen_api.Paths(proto_copy, ROOT / "src", ROOT / "docs" / "api.md", changelog)
    problems = gen_api.check_api(paths)
    assert not [p for p in problems if "fingerprint" in p]
    # The committed code and docs still describe the old surface, and the check says so.
    assert any(p.startswith("src/temper/api/v1/agent_pb2.py ") for p in problems)
    assert any(p.startswith("docs/api.md ") for p in problems)


def test_a_comment_only_change_keeps_the_fingerprint(
    gen_api: ModuleType, committed: Any, proto_copy: Path
) -> None:
    edit_agent_proto(proto_copy, r"^(?=message )", "// A comment line the test added.\n")
    changed = gen_api.generate_api(proto_copy)
    assert "A comment line the test added." in changed.docs
    assert changed.fingerprint == committed.fingerprint


def test_docs_have_a_section_for_every_call_and_message() -> None:
    docs = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^### (\S+)$", docs, flags=re.MULTILINE))
    calls = {m.name for s in agent_pb2.DESCRIPTOR.services_by_name.values() for m in s.methods}
    messages = set(agent_pb2.DESCRIPTOR.message_types_by_name)
    assert calls, "the generated descriptor has no calls"
    assert calls - headings == set()
    assert messages - headings == set()
