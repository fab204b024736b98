"""Every path the repository cites exists here, and nothing cites notes kept outside it.

Docstrings, comments, docs and committed reports name files as their evidence ("measured in
bench/reports/cpu-limit.md", "docs/adr/0003"). A file renamed, removed or never committed turns
such a citation into a dead end; so does a citation of the reading notes that sit beside the
repository on some machines and not in it. The repository has to stand on its own.

What counts as a cited path: a token with a `/` whose first segment is a top-level directory of
the repository (`docs/…`, `src/…`, `bench/reports/…`), so paths inside a guest (`/run/…`), a
kernel tree (`kernel/sched/ext.c`) or an upstream crate (`scx_layered-1.1.2/src/main.rs`) are
not ours to check. A token ends at the first character that cannot be in a path, so backticks,
quotes, brackets, `:line` suffixes and `#anchors` fall away; trailing dots and dashes are
stripped. `{a,b}` is expanded, `*` and `?` must match some file, a segment holding a
placeholder (`<name>`, `$VAR`, an f-string's `{name}`) is checked up to the directory before it,
and a path may name a file by the part of its name before a `-` (an ADR by its number:
`docs/adr/0003`). Paths cited on purpose that are not here are listed in `NOT_HERE`.

The checks, on every text file git lists (tracked, and untracked but not ignored):

- a cited path names a file or directory of the repository;
- a cited Markdown file's `#anchor` is one of its headings;
- a row of docs/reliability.md cited by id (`docs/reliability.md row F8`, `rows A1-A15`) is a
  row of its tables;
- a relative link in a Markdown file resolves;
- nothing names the notes kept outside the repository (`FORBIDDEN` below says how they look).

Without git the test fails with the reason: the file list is what makes the check complete.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[2]

# A path token: a first segment, then one or more `/segment`s. Placeholders (`<id>`, `$VAR`),
# globs and `{a,b}` groups may sit in later segments; an optional `#anchor` follows.
_TOKEN = re.compile(
    r"(?<![\w./~$@<>{}*?+-])"
    r"(?P<path>[\w.-]+(?:/(?:[\w.@+*?<>$-]|\{[\w.,-]*\})*)+)"
    r"(?:#(?P<anchor>[\w-]+))?"
)
# `{a,b}` is a set of names; `{name}` without a comma is a format field, a placeholder.
_BRACES = re.compile(r"\{([^{},]*,[^{}]*)\}")
_PLACEHOLDER = re.compile(r"[<>${}]")
_GLOB = re.compile(r"[*?]")
_MD_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(?P<text>.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
# docs/reliability.md's rows are table lines starting with the row's id.
_ROW = re.compile(r"^\|\s*(?P<id>[A-H][0-9]{1,2})\b")
_ROW_ID = re.compile(r"([A-H])([0-9]{1,2})")
RELIABILITY = "docs/reliability.md"
_ROW_CITATION = re.compile(
    re.escape(RELIABILITY) + r"[,:]?\s+(?:rows?\s+)?"
    r"(?P<ids>[A-H][0-9]{1,2}(?:\s*(?:-|\u2013|,|and|to)\s*[A-H][0-9]{1,2})*)"
)

# Notes that live outside the repository. Each pattern is written so that its own source text
# does not match it, which keeps this file clean without an exemption.
_OUTSIDE_NOTES = "reliability|scx_layered|perf_anchors|peers|k8s_testing|aesthetics|next_steps"
FORBIDDEN: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("the reference notes", re.compile(r"\breference[/ ]+[\w.-]+\.md")),
    # A bare note name, unless it is a Markdown link target (those are resolved instead).
    ("a reference note", re.compile(rf"(?<![\w/.-])(?<!\]\()(?:{_OUTSIDE_NOTES})[\w-]*\.md\b")),
    ("the design note", re.compile(r"\bDESIGN\b")),
    ("the style note", re.compile(r"\bSTYLE\.md\b")),
    ("the shared folder", re.compile(r"\.\./shared\b")),
)

# Paths cited on purpose although they are not in the repository, each with its reason.
NOT_HERE = {
    "proto/temper/api/v2": "proto/CHANGELOG.md names where a breaking API change would go",
}


@dataclass(frozen=True)
class Repo:
    """What a citation can point at: the files and directories of the repository."""

    files: frozenset[str]
    dirs: frozenset[str] = field(init=False)
    top_dirs: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        dirs = {str(p) for f in self.files for p in PurePosixPath(f).parents if str(p) != "."}
        object.__setattr__(self, "dirs", frozenset(dirs))
        object.__setattr__(self, "top_dirs", frozenset(d for d in dirs if "/" not in d))

    def has(self, path: str) -> bool:
        return path in self.files or path in self.dirs


@dataclass(frozen=True)
class Citation:
    line: int
    path: str  # as cleaned, before brace expansion
    anchor: str | None


def git_files(repo: Path) -> list[str]:
    """The files git would commit: tracked, and untracked but not ignored; those on disk."""
    git = shutil.which("git")
    if git is None:
        pytest.fail("git is not on PATH: the citation check lists the repository with git")
    result = subprocess.run(
        [git, "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"git ls-files failed in {repo}: {result.stderr.decode(errors='replace')}")
    names = sorted({n for n in result.stdout.decode().split("\0") if n})
    if not names:
        pytest.fail(f"git ls-files listed nothing in {repo}")
    return [n for n in names if (repo / n).is_file()]


def cited_paths(text: str, repo: Repo) -> Iterator[Citation]:
    """Each repository path the text names, cleaned of what surrounds it."""
    for number, line in enumerate(text.splitlines(), 1):
        for match in _TOKEN.finditer(line):
            path = match["path"].rstrip(".-")
            if path.split("/", 1)[0] in repo.top_dirs:
                yield Citation(number, path, match["anchor"])


def expand_braces(path: str) -> list[str]:
    match = _BRACES.search(path)
    if match is None:
        return [path]
    head, tail = path[: match.start()], path[match.end() :]
    return [p for alt in match[1].split(",") for p in expand_braces(head + alt + tail)]


def resolves(path: str, repo: Repo) -> bool:
    """Whether a cited path (no braces) names something in the repository."""
    path = path.rstrip("/")
    if path in NOT_HERE:
        return True
    if _PLACEHOLDER.search(path):
        # A template: the directory before the first placeholder segment must exist.
        segments = path.split("/")
        first = next(i for i, s in enumerate(segments) if _PLACEHOLDER.search(s))
        return repo.has("/".join(segments[:first]))
    if _GLOB.search(path):
        return any(fnmatch.fnmatchcase(p, path) for p in (*repo.files, *repo.dirs))
    # An ADR is cited by its number alone: docs/adr/0003 for its file.
    return repo.has(path) or any(f.startswith(path + "-") for f in repo.files)


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, `-` for spaces."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(text: str) -> set[str]:
    anchors, fenced = set(), False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            anchors.add(slug(match["text"]))
    return anchors


def row_ids(text: str) -> set[str]:
    return {m["id"] for line in text.splitlines() if (m := _ROW.match(line))}


def cited_rows(text: str) -> Iterator[tuple[int, str]]:
    """Each row id cited with docs/reliability.md; a range `A1-A15` names every row in it."""
    for number, line in enumerate(text.splitlines(), 1):
        for match in _ROW_CITATION.finditer(line):
            parts = re.split(r"\s*(?:,|and)\s*", match["ids"])
            for part in parts:
                ends = _ROW_ID.findall(part)
                if len(ends) == 2 and ends[0][0] == ends[1][0]:
                    letter, low, high = ends[0][0], int(ends[0][1]), int(ends[1][1])
                    yield from ((number, f"{letter}{n}") for n in range(low, high + 1))
                else:
                    yield from ((number, f"{letter}{n}") for letter, n in ends)


def forbidden(text: str) -> Iterator[tuple[int, str, str]]:
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in FORBIDDEN:
            for match in pattern.finditer(line):
                yield number, what, match[0]


def problems(name: str, text: str, repo: Repo, read: dict[str, str] | None = None) -> Iterator[str]:
    """Every broken citation in one file, as `name:line: what`. `read` holds the texts of the
    Markdown files a citation's anchor or row id is checked against (all of them, in the test)."""
    texts = read or {}
    for number, what, found in forbidden(text):
        yield f"{name}:{number}: cites {what} ({found!r}), which is outside the repository"
    for citation in cited_paths(text, repo):
        yield from _path_problems(name, citation, repo, texts)
    if name.endswith(".md"):
        yield from _link_problems(name, text, repo, texts)
    rows = row_ids(texts.get(RELIABILITY, ""))
    for number, row in cited_rows(text):
        if row not in rows:
            yield f"{name}:{number}: {RELIABILITY} has no row {row}"


def _path_problems(
    name: str, citation: Citation, repo: Repo, texts: dict[str, str]
) -> Iterator[str]:
    where = f"{name}:{citation.line}"
    for path in expand_braces(citation.path):
        if not resolves(path, repo):
            yield f"{where}: cites {path}, which is not in the repository"
        elif citation.anchor and path in texts and citation.anchor not in headings(texts[path]):
            yield f"{where}: {path} has no heading #{citation.anchor}"


def _link_problems(name: str, text: str, repo: Repo, texts: dict[str, str]) -> Iterator[str]:
    base = PurePosixPath(name).parent
    for number, line in enumerate(text.splitlines(), 1):
        for match in _MD_LINK.finditer(line):
            target, _, anchor = match["target"].partition("#")
            if re.match(r"[a-z]+:", target) or not target:  # a URL, or an anchor in this file
                continue
            path = _normalise(base / target)
            if path is None or not repo.has(path):
                yield f"{name}:{number}: links to {target}, which is not in the repository"
            elif anchor and path in texts and anchor not in headings(texts[path]):
                yield f"{name}:{number}: {path} has no heading #{anchor}"


def _normalise(path: PurePosixPath) -> str | None:
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def read_texts(repo_dir: Path, names: Iterable[str]) -> dict[str, str]:
    """The UTF-8 text files among `names`; a file with a NUL byte is binary and has no text."""
    texts = {}
    for name in names:
        data = (repo_dir / name).read_bytes()
        if b"\0" not in data:
            texts[name] = data.decode("utf-8")
    return texts


# -- the repository ------------------------------------------------------------------------------


def cited_from(name: str) -> bool:
    """Whether `name` is prose that cites. A report's JSON is data: it holds raw logs (such as
    scx_layered's own log lines, which name its source files), and its prose is rendered into
    the .md beside it, which is scanned."""
    return not (name.startswith("bench/reports/") and name.endswith(".json"))


def test_every_cited_path_exists_and_nothing_cites_notes_outside_the_repository() -> None:
    names = git_files(REPO)
    repo = Repo(frozenset(names))
    texts = {name: text for name, text in read_texts(REPO, names).items() if cited_from(name)}
    assert RELIABILITY in texts, f"{RELIABILITY} is missing: row citations cannot be checked"
    found = [p for name, text in texts.items() for p in problems(name, text, repo, texts)]
    assert not found, "broken citations:\n" + "\n".join(found)


def test_the_scan_sees_the_tiers_that_cite() -> None:
    # Guards against a listing that silently lost a part of the tree.
    top = Repo(frozenset(git_files(REPO))).top_dirs
    assert {"bench", "charts", "docs", "patches", "scripts", "src", "tests"} <= top


# -- the extractor, on made-up text ---------------------------------------------------------------

FAKE = Repo(
    frozenset(
        {
            "docs/lab.md",
            "docs/adr/0003-our-scx-layered-patch.md",
            RELIABILITY,
            "bench/reports/cpu-limit.md",
            "bench/reports/cpu-limit.json",
            "src/temper_testing/lab/proof.py",
            "scripts/install-scx-layered",
        }
    )
)
FAKE_TEXTS = {
    "docs/lab.md": "# The kernel lab\n\n## What it found\n\n```\n# not a heading\n```\n",
    RELIABILITY: "| row | fault |\n|---|---|\n| A1 | no sched_ext |\n| A2 | verifier |\n",
}
# Built from pieces so that this file does not cite what it plants.
MISSING = "docs/" + "nowhere.md"
OUTSIDE = (
    "DESI" + "GN.md section 4",
    "DESI" + "GN §7",
    "reference" + "/peers.md",
    "see ../" + "shared/x",
)


@pytest.mark.parametrize(
    ("text", "cited"),
    [
        ("see docs/lab.md.", ["docs/lab.md"]),
        ("(`docs/lab.md`)", ["docs/lab.md"]),
        (
            "src/temper_testing/lab/proof.py:23 and docs/" + "lab.md#what-it-found,",
            ["src/temper_testing/lab/proof.py", "docs/lab.md"],
        ),
        ("bench/reports/cpu-limit.{md,json}", ["bench/reports/cpu-limit.{md,json}"]),
        ("docs/adr/0003-*", ["docs/adr/0003-*"]),
        ("/sys/fs/cgroup/kubepods/ and /run/src/x.py", []),
        ("scx_layered-1.1.2/src/main.rs", []),
        ("kernel/sched/ext.c", []),
    ],
)
def test_paths_are_cut_out_of_their_punctuation(text: str, cited: list[str]) -> None:
    assert [c.path for c in cited_paths(text, FAKE)] == cited
    assert not list(problems("x.py", text, FAKE, FAKE_TEXTS))


def test_a_missing_path_is_reported_with_its_line() -> None:
    text = f"fine: docs/lab.md\nbroken: ({MISSING}:12)\n"
    assert list(problems("a.py", text, FAKE, FAKE_TEXTS)) == [
        f"a.py:2: cites {MISSING}, which is not in the repository"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "bench/" + "reports/cpu-limit.{md,txt}",
        "docs/" + "adr/0009-*",
        "src/" + "temper/nowhere/<name>.py",
        "docs/" + "lab.md#no-such-heading",
        "docs/" + "lab.md#not-a-heading",
    ],
)
def test_globs_templates_braces_and_anchors_must_resolve(text: str) -> None:
    assert list(problems("x.py", text, FAKE, FAKE_TEXTS))


def test_a_template_is_checked_up_to_its_placeholder() -> None:
    assert not list(problems("x.py", "src/temper_testing/lab/<name>.py", FAKE, FAKE_TEXTS))


@pytest.mark.parametrize("text", OUTSIDE)
def test_notes_outside_the_repository_are_never_cited(text: str) -> None:
    assert [p for p in problems("x.py", text, FAKE, FAKE_TEXTS) if "outside" in p]


def test_reliability_rows_are_checked_by_id_and_range() -> None:
    ok = f"({RELIABILITY} rows A1-A2) and {RELIABILITY} row A1"
    assert not list(problems("x.py", ok, FAKE, FAKE_TEXTS))
    bad = f"({RELIABILITY} rows A1-A3, B1)"
    assert list(problems("x.py", bad, FAKE, FAKE_TEXTS)) == [
        f"x.py:1: {RELIABILITY} has no row A3",
        f"x.py:1: {RELIABILITY} has no row B1",
    ]


def test_markdown_links_resolve_relative_to_their_file() -> None:
    text = "[ADR 0003](adr/0003-our-scx-layered-patch.md), [lab](lab.md#what-it-found)\n"
    assert not list(problems("docs/lab.md", text, FAKE, FAKE_TEXTS))
    bad = "[gone](adr/0004-own-lab-runner.md) [up](../../outside.md)\n"
    assert len(list(problems("docs/lab.md", bad, FAKE, FAKE_TEXTS))) == 2


def test_a_planted_citation_in_a_copy_of_the_repository_fails(tmp_path: Path) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.fail("git is not on PATH: the citation check lists the repository with git")
    copy = tmp_path / "repo"
    (copy / "docs").mkdir(parents=True)
    (copy / "docs" / "lab.md").write_text("# The kernel lab\n")
    (copy / "a.py").write_text(f'"""Measured in docs/lab.md and {MISSING}."""\n')
    subprocess.run([git, "init", "-q", str(copy)], check=True, capture_output=True)
    names = git_files(copy)  # untracked files count: they are what a commit would add
    repo = Repo(frozenset(names))
    texts = read_texts(copy, names)
    found = [p for name, text in texts.items() for p in problems(name, text, repo, texts)]
    assert found == [f"a.py:1: cites {MISSING}, which is not in the repository"]
