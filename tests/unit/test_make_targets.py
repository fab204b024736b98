"""How long each make target takes has one source: the Makefile's `##` help lines.

Every phony target but `clean` has a help line, `## TARGET: what it does (cold TIME, warm TIME)`,
a time being `N s` or `N min` (`~` when approximate, ` (estimate)` when not measured). README.md
quotes the times word for word: in the last column of its command table, one row per target with
a help line, and at the end of its opening `make` commands. The tests fail when a time differs,
when a target is missing from either side, or when a help line has no time.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WITHOUT_HELP = {"clean": "removes the local venv and caches; not a command README lists"}

_TIME = r"~?\d+(?:\.\d+)? (?:s|min)(?: \(estimate\))?"
TIME = re.compile(rf"^cold {_TIME}, warm {_TIME}$")
# The last parenthesised group on the line, which may hold one more level of parentheses.
_LAST_PARENS = r" \((?P<time>(?:[^()]|\([^()]*\))*)\)$"
HELP = re.compile(r"^## (?P<target>[\w-]+): .*?(?:" + _LAST_PARENS + r"|$)")
PHONY = re.compile(r"^\.PHONY:(?P<targets>.*)$", re.M)
ROW = re.compile(r"^\| `make (?P<target>[\w-]+)` \|.*\| (?P<time>[^|]*?) \|$")
COMMAND = re.compile(r"^make (?P<target>[\w-]+)\s+#.*?(?:" + _LAST_PARENS + r"|$)")


def help_times(makefile: str) -> tuple[dict[str, str | None], list[str]]:
    """Each documented target's time (None when its help line has none), and the problems."""
    times: dict[str, str | None] = {}
    problems = []
    for number, line in enumerate(makefile.splitlines(), 1):
        found = HELP.match(line)
        if found is None:
            continue
        times[found["target"]] = found["time"]
        if found["time"] is None or TIME.match(found["time"]) is None:
            problems.append(
                f"Makefile:{number}: make {found['target']}: the help line must end in "
                f"(cold TIME, warm TIME), e.g. (cold ~7 min, warm 0 s): {line}"
            )
    phony = {t for m in PHONY.finditer(makefile) for t in m["targets"].split()}
    problems += [
        f"Makefile: make {target} has no `##` help line with its time"
        for target in sorted(phony - times.keys() - WITHOUT_HELP.keys())
    ]
    return times, problems


def time_mismatches(makefile: str, readme: str) -> list[str]:
    """Where README.md's times differ from the Makefile's help lines, or a target is missing."""
    times, problems = help_times(makefile)
    rows: dict[str, str] = {}
    for number, line in enumerate(readme.splitlines(), 1):
        if row := ROW.match(line):
            rows[row["target"]] = row["time"]
            quoted, where = row["time"], "command table"
        elif command := COMMAND.match(line):
            quoted, where = command["time"], "opening commands"
            row = command
        else:
            continue
        target = row["target"]
        if target not in times:
            problems.append(f"README.md:{number}: make {target} has no help line in the Makefile")
        elif quoted != times[target]:
            problems.append(
                f"README.md:{number}: the {where} give make {target} {quoted!r}; the Makefile "
                f"says {times[target]!r}"
            )
    problems += [
        f"README.md: the command table has no row for make {target}"
        for target in sorted(times.keys() - rows.keys())
    ]
    return problems


def test_readme_quotes_the_makefiles_times() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    problems = time_mismatches(makefile, readme)
    assert not problems, "\n".join(problems)


MAKEFILE = """\
.PHONY: demo test clean

## demo: the lab proof (cold ~35 min, warm ~25 min)
demo:
\tpython bench/demo.py

## test: every tier (cold ~50 min (estimate), warm ~18 min)
test:
\tpytest
"""
README = """\
```sh
make demo    # the lab proof (cold ~35 min, warm ~25 min)
```

| command | what it does | time |
|---|---|---|
| `make demo` | the lab proof | cold ~35 min, warm ~25 min |
| `make test` | every tier | cold ~50 min (estimate), warm ~18 min |
| `python -m temper_testing.lab provision` | not a make target | cold ~15 s, warm 0.2 s |
"""


def test_agreeing_times_pass() -> None:
    assert time_mismatches(MAKEFILE, README) == []


def test_a_time_that_differs_is_found_in_the_table_and_the_opening_commands() -> None:
    readme = README.replace("warm ~18 min", "warm ~14 min").replace(
        "make demo    # the lab proof (cold ~35 min", "make demo    # the lab proof (cold ~40 min"
    )
    assert time_mismatches(MAKEFILE, readme) == [
        "README.md:2: the opening commands give make demo 'cold ~40 min, warm ~25 min'; the "
        "Makefile says 'cold ~35 min, warm ~25 min'",
        "README.md:8: the command table give make test 'cold ~50 min (estimate), warm ~14 min'; "
        "the Makefile says 'cold ~50 min (estimate), warm ~18 min'",
    ]


def test_a_missing_row_a_missing_help_line_and_a_help_line_without_a_time_are_found() -> None:
    makefile = MAKEFILE.replace("(cold ~35 min, warm ~25 min)", "(~25 min)").replace(
        ".PHONY: demo test clean", ".PHONY: demo test bench clean"
    )
    readme = README.replace(
        "| `make test` | every tier | cold ~50 min (estimate), warm ~18 min |\n", ""
    )
    readme += "| `make api` | regenerate | cold ~1 min, warm 2 s |\n"
    assert time_mismatches(makefile, readme) == [
        "Makefile:3: make demo: the help line must end in (cold TIME, warm TIME), e.g. (cold ~7 "
        "min, warm 0 s): ## demo: the lab proof (~25 min)",
        "Makefile: make bench has no `##` help line with its time",
        "README.md:2: the opening commands give make demo 'cold ~35 min, warm ~25 min'; the "
        "Makefile says '~25 min'",
        "README.md:7: the command table give make demo 'cold ~35 min, warm ~25 min'; the "
        "Makefile says '~25 min'",
        "README.md:9: make api has no help line in the Makefile",
        "README.md: the command table has no row for make test",
    ]
