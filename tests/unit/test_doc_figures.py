"""Every figure README.md and docs/ quote from a benchmark comes from its committed report.

A bench script renders what the docs quote with `doc_figures(report)` (block name -> text) and
lists in `FIGURE_DOCS` the docs that hold each block, between `<!-- NAME: COMMAND -->` and
`<!-- /NAME -->` (`temper_testing.lab.guestjob.doc_block`; COMMAND is the script's `--render-only`,
which rewrites the blocks from the committed JSON, as a benchmark run does). The tests fail when
a block differs from what its report renders, when a doc holds a block its script does not
know, and when a paragraph, list item or table row outside the blocks puts a figure beside a
report it cites: such a figure was typed by hand and drifts.

docs/lab.md's blocks (interference, lab stability, lab costs) are compared with their reports
in tests/lab/test_bench_figures.py. docs/adr/ is not read: a decision record keeps the figures
its decision was made on.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from temper_testing.lab.guestjob import doc_block, write_doc_block

REPO = Path(__file__).resolve().parents[2]
# Each bench script whose report the docs quote, and its report's stem under bench/reports/.
BENCHES = {
    "agent_watch": "agent-watch",
    "cpu_limit": "cpu-limit",
    "interference": "interference",
    "lab_costs": "lab-costs",
    "lab_stability": "lab-stability",
    "observe_overhead": "observe-overhead",
    "restart_gap": "restart-gap",
}
# Docs left out of the check for hand-typed figures, each with its reason.
NOT_YET: dict[str, str] = {}

_BLOCK = re.compile(r"<!-- (?P<name>[\w-]+): (?P<command>.*?) -->.*?<!-- /(?P=name) -->", re.S)
_RENDER = re.compile(r"^python bench/(?P<bench>\w+)\.py --render-only$")
_CITED_REPORT = re.compile(r"bench/reports/[\w-]+\.(?:md|json)")
_FIGURE = re.compile(
    r"\d(?:[\d.,]*\d)?(?:x|\s?(?:ms|s|µs|us|min|MiB|KiB|GiB|%|CPUs?|millicpu))(?!\w)"
)
_FENCE = re.compile(r"^\s*(```|~~~)")
_ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.)\s|^\|")


def bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def committed_report(bench: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(
        (REPO / "bench" / "reports" / f"{BENCHES[bench]}.json").read_text()
    )
    return report


def stale_blocks(module: ModuleType, report: dict[str, Any], root: Path = REPO) -> list[str]:
    """Each block of `module`'s figures that is missing from its doc under `root`, or that
    differs from what `report` renders."""
    problems = []
    for name, text in module.doc_figures(report).items():
        for doc in module.FIGURE_DOCS[name]:
            quoted = doc_block(name, root / doc)
            if quoted is None:
                problems.append(f"{doc}: no block {name!r}")
            elif quoted != text:
                problems.append(
                    f"{doc}: block {name!r} reads\n{quoted}\nand the report gives\n{text}"
                )
    return problems


def checked_docs() -> list[str]:
    docs = ["README.md", "ARCHITECTURE.md"]
    docs += sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))
    return [doc for doc in docs if doc not in NOT_YET]


def prose_units(text: str) -> list[tuple[int, str]]:
    """The paragraphs, list items and table rows of Markdown `text` outside code fences and
    figure blocks, each with the number of the line it starts on."""
    text = _BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    units: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    fenced = False

    def close() -> None:
        if current:
            units.append((start, " ".join(current)))
            current.clear()

    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            close()
            fenced = not fenced
            continue
        if fenced or not line.strip():
            close()
            continue
        if _ITEM.match(line):
            close()
        if not current:
            start = number
        current.append(line.strip())
    close()
    return units


def hand_typed_figures(doc: str, text: str) -> list[str]:
    """Figures (a number with a unit) in a unit of `text` that cites a benchmark report."""
    return [
        f"{doc}:{line}: {', '.join(_FIGURE.findall(unit))} beside {_CITED_REPORT.search(unit)[0]}"
        for line, unit in prose_units(text)
        if _CITED_REPORT.search(unit) and _FIGURE.search(unit)
    ]


@pytest.mark.parametrize("bench", sorted(BENCHES))
def test_the_docs_quote_the_committed_report(bench: str) -> None:
    module = bench_module(bench)
    problems = stale_blocks(module, committed_report(bench))
    assert not problems, f"stale figures; `{module.RENDER}` rewrites them:\n" + "\n".join(problems)


def test_every_block_in_the_docs_is_one_its_script_renders() -> None:
    problems = []
    for doc in checked_docs():
        for block in _BLOCK.finditer((REPO / doc).read_text(encoding="utf-8")):
            render = _RENDER.match(block["command"])
            if render is None or render["bench"] not in BENCHES:
                problems.append(f"{doc}: block {block['name']!r} names no bench script we check")
                continue
            docs = bench_module(render["bench"]).FIGURE_DOCS.get(block["name"], ())
            if doc not in docs:
                problems.append(
                    f"{doc}: {render['bench']}.FIGURE_DOCS has no {block['name']!r} here"
                )
    assert not problems, "\n".join(problems)


def test_no_doc_types_a_report_figure_by_hand() -> None:
    found = [
        problem
        for doc in checked_docs()
        for problem in hand_typed_figures(doc, (REPO / doc).read_text(encoding="utf-8"))
    ]
    assert not found, (
        "figures beside a cited report, outside the blocks rendered from it (quote them through "
        "the bench script's doc_figures):\n" + "\n".join(found)
    )


def test_a_block_that_differs_from_its_report_is_found(tmp_path: Path) -> None:
    module = bench_module("agent_watch")
    report = committed_report("agent_watch")
    docs = {doc for held_in in module.FIGURE_DOCS.values() for doc in held_in}
    for doc in docs:
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / doc, tmp_path / doc)
    assert stale_blocks(module, report, tmp_path) == []

    # A new run: every doc that quotes the peak now quotes the old one.
    rerun = copy.deepcopy(report)
    rerun["peak_rss_mib"] = report["peak_rss_mib"] + 5.5
    assert [p.split(":")[0] for p in stale_blocks(module, rerun, tmp_path)] == [
        "README.md",
        "docs/reliability.md",
    ]

    # A hand edit inside a block.
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace(f"{report['peak_rss_mib']} MiB", "47 MiB"))
    (problem,) = stale_blocks(module, report, tmp_path)
    assert problem.startswith("README.md: block 'agent-watch-figures' reads")
    assert "47 MiB" in problem

    # Rendering from the report puts it right again.
    for name, text in module.doc_figures(report).items():
        for doc in module.FIGURE_DOCS[name]:
            write_doc_block(name, module.RENDER, text, tmp_path / doc)
    assert stale_blocks(module, report, tmp_path) == []

    # A block deleted from its doc.
    cli = tmp_path / "docs" / "cli.md"
    cli.write_text(_BLOCK.sub("", cli.read_text()))
    assert stale_blocks(module, report, tmp_path) == [
        "docs/cli.md: no block 'agent-watch-api-cost'"
    ]


def test_a_hand_typed_figure_beside_a_cited_report_is_found() -> None:
    text = "\n".join(
        [
            "# Doc",
            "",
            "The agent uses 47 MiB RSS and",
            "answers in 31 ms (bench/reports/agent-watch.md).",
            "",
            "<!-- agent-watch-figures: python bench/agent_watch.py --render-only -->",
            "It peaks at 64.4 MiB (bench/reports/agent-watch.md).",
            "<!-- /agent-watch-figures -->",
            "",
            "- a target of 0.13% of one core (docs/performance.md)",
            "- measured in bench/reports/observe-overhead.md, no figure here",
            "| B2 | bounded: 64.4 MiB | bench/reports/agent-watch.md |",
            "",
            "```",
            "3.65x (bench/reports/cpu-limit.md)",
            "```",
        ]
    )
    assert hand_typed_figures("doc.md", text) == [
        "doc.md:3: 47 MiB, 31 ms beside bench/reports/agent-watch.md",
        "doc.md:12: 64.4 MiB beside bench/reports/agent-watch.md",
    ]
