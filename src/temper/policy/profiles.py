"""Workload profiles: tiers for groups of threads inside selected pods.

A pod gets one tier, and every thread in it runs there. Many pods mix work that needs it with work
that does not: a JVM's request threads share the pod with its GC threads, a database's query
threads with its compaction threads. A workload profile, a TOML file written by the node's
operator, names pods by a selector and groups of their threads by a `comm` prefix, and puts each
group in a tier of its own. Each thread group becomes one `scx_layered` layer, matched by the pod's
cgroup and the thread's `comm`.

A profile can only move threads DOWN from their pod's tier. Selectors match namespaces and labels,
and a pod's author controls both, so a profile that could raise a tier would let any pod claim a
better one by copying a label. This module accepts any tier, because it does not know which pods
a profile will select; the planner places each thread group at the lower of the group's tier and
its pod's tier.

This module is pure: it takes the bytes of one file and returns values (the agent's host adapter
reads the files). Everything that can be wrong with a file is collected and raised together as
one `ProfileError`, each problem starting with the path of the field it is about, so an operator
can fix a file in one pass.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time

from temper.policy.errors import ProfileError
from temper.policy.scx import MAX_COMM_PREFIX_BYTES, MAX_LAYERS
from temper.policy.tiers import Tier

# A profile is a few hundred bytes written by hand. 64 KiB is ample for that and bounds the
# parser's time and memory when a wrong file (a log, a binary) lands in the profile directory.
MAX_PROFILE_BYTES = 64 * 1024
# A valid file nests four levels deep: the [[profile]] array, a profile, its selector, its
# match_labels. Six leaves room for a value one level too deep to be reported as a wrong type,
# and keeps everything after parsing (validation, messages) working on a bounded shape.
MAX_NESTING = 6
# Each thread group becomes one scx_layered layer. scx_layered allows 16 layers; the five tier
# layers, two possible moved QoS-default layers (docs/adr/0001) and the host catch-all leave 8.
MAX_THREAD_GROUPS = MAX_LAYERS - len(Tier) - 2 - 1

# Names become parts of scheduler layer names: short, lowercase, safe in any identifier.
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?")
_NAME_RULE = (
    "lowercase letters, digits and '-', starting and ending with a letter or digit,"
    " at most 24 characters"
)
# A Kubernetes namespace name is a DNS label (RFC 1123).
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DNS_LABEL_RULE = "a DNS label: lowercase letters, digits and '-', at most 63 characters"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

_TOP_FIELDS = ("profile",)
_PROFILE_FIELDS = ("name", "selector", "thread_group")
_SELECTOR_FIELDS = ("namespace", "match_labels")
_GROUP_FIELDS = ("name", "comm_prefix", "tier")

# Checked in order: bool before int (bool is an int), datetime before date (likewise).
_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "float"),
    (str, "string"),
    (dict, "table"),
    (list, "array"),
    (datetime, "date-time"),
    (date, "date"),
    (time, "time"),
)


@dataclass(frozen=True)
class Selector:
    """Which pods a profile applies to. The empty selector selects every pod."""

    namespace: str | None = None
    match_labels: tuple[tuple[str, str], ...] = ()  # sorted by key

    def __post_init__(self) -> None:
        object.__setattr__(self, "match_labels", tuple(sorted(self.match_labels)))

    def selects(self, namespace: str, labels: Mapping[str, str]) -> bool:
        """True for a pod in `namespace` carrying every label of `match_labels`."""
        if self.namespace is not None and namespace != self.namespace:
            return False
        return all(labels.get(key) == value for key, value in self.match_labels)


@dataclass(frozen=True)
class ThreadGroup:
    """The threads of a selected pod whose comm starts with `comm_prefix`, and their tier."""

    name: str
    comm_prefix: str
    tier: Tier


@dataclass(frozen=True)
class Profile:
    name: str
    selector: Selector
    thread_groups: tuple[ThreadGroup, ...]
    source: str  # the file it came from, for messages


def parse_profiles(data: bytes, source: str) -> tuple[Profile, ...]:
    """Parse one profile file; raise ProfileError(source, problems) listing EVERY problem."""
    problems: list[str] = []
    profiles: tuple[Profile, ...] = ()
    document = _load(data, problems)
    if document is not None:
        problems.extend(_nesting_problems(document))
        profiles = _read_document(document, source, problems)
    if problems:
        raise ProfileError(source, problems)
    return profiles


def combine_profiles(
    files: Sequence[tuple[Profile, ...]], max_thread_groups: int = MAX_THREAD_GROUPS
) -> tuple[Profile, ...]:
    """Concatenate several files' profiles (in order).

    Raise ProfileError (source "profiles") for a profile name defined twice (naming both
    sources) or for more thread groups in total than `max_thread_groups`.
    """
    combined = tuple(profile for profiles in files for profile in profiles)
    problems = _redefinitions(combined)
    problems.extend(_over_budget(combined, max_thread_groups))
    if problems:
        raise ProfileError("profiles", problems)
    return combined


# Loading: bytes to a TOML document.


def _load(data: bytes, problems: list[str]) -> dict[str, object] | None:
    if len(data) > MAX_PROFILE_BYTES:
        problems.append(
            f"file: {len(data)} bytes, more than the limit of {MAX_PROFILE_BYTES} bytes"
        )
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"file: not UTF-8 (invalid byte at offset {exc.start})")
        return None
    return _load_toml(text, problems)


def _load_toml(text: str, problems: list[str]) -> dict[str, object] | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"file: TOML syntax error: {exc}")
    except RecursionError:
        # tomllib recurses once per level of nesting; Python's recursion limit is its only bound.
        problems.append(f"file: nested too deeply to parse (at most {MAX_NESTING} levels)")
    except ValueError as exc:
        # E.g. a decimal integer longer than Python's int/str digit limit.
        problems.append(f"file: not valid TOML: {exc}")
    return None


def _nesting_problems(document: dict[str, object]) -> list[str]:
    """A problem for each outermost table or array nested deeper than MAX_NESTING."""
    problems: list[str] = []
    stack: list[tuple[str, object, int]] = [("", document, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_NESTING:
            problems.append(f"{path}: nested {depth} levels deep, at most {MAX_NESTING} allowed")
            continue
        children = [(_join(path, key), child, depth + 1) for key, child in _children(value)]
        stack.extend(reversed(children))  # so problems come out in document order
    return problems


def _children(value: object) -> list[tuple[str | int, object]]:
    if isinstance(value, dict):
        return [(key, child) for key, child in value.items() if isinstance(child, dict | list)]
    if isinstance(value, list):
        return [
            (index, child) for index, child in enumerate(value) if isinstance(child, dict | list)
        ]
    return []


# Reading: a TOML document to profiles. Each reader appends its problems and returns None when it
# cannot build its value; parse_profiles raises if any problem was found anywhere.


def _read_document(
    document: dict[str, object], source: str, problems: list[str]
) -> tuple[Profile, ...]:
    for key in document:
        if key not in _TOP_FIELDS:
            problems.append(f"{_join('', key)}: unknown top-level key (only [[profile]] tables)")
    tables = _array_of_tables("profile", document.get("profile"), "profile", problems)
    profiles = [
        _read_profile(f"profile[{i}]", table, source, problems) for i, table in enumerate(tables)
    ]
    problems.extend(_duplicate_names("profile", tables, "profile"))
    problems.extend(_file_budget(tables))
    return tuple(profile for profile in profiles if profile is not None)


def _read_profile(path: str, value: object, source: str, problems: list[str]) -> Profile | None:
    table = _table(path, value, _PROFILE_FIELDS, problems)
    if table is None:
        return None
    name = _name(f"{path}.name", _string(path, table, "name", problems), problems)
    selector = _read_selector(f"{path}.selector", table.get("selector"), problems)
    groups = _read_thread_groups(f"{path}.thread_group", table.get("thread_group"), problems)
    if name is None or selector is None:
        return None
    return Profile(name, selector, groups, source)


def _read_selector(path: str, value: object, problems: list[str]) -> Selector | None:
    if value is None:
        return Selector()
    table = _table(path, value, _SELECTOR_FIELDS, problems)
    if table is None:
        return None
    namespace = _namespace(path, table, problems)
    labels = _match_labels(f"{path}.match_labels", table.get("match_labels"), problems)
    if labels is None:
        return None
    return Selector(namespace, labels)


def _namespace(path: str, table: dict[str, object], problems: list[str]) -> str | None:
    if "namespace" not in table:
        return None
    namespace = _string(path, table, "namespace", problems)
    if namespace is not None and not _DNS_LABEL.fullmatch(namespace):
        problems.append(f"{path}.namespace: {namespace!r} is not {_DNS_LABEL_RULE}")
    return namespace


def _match_labels(
    path: str, value: object, problems: list[str]
) -> tuple[tuple[str, str], ...] | None:
    if value is None:
        return ()
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a table, got {_type_name(value)}")
        return None
    labels: list[tuple[str, str]] = []
    for key, label in value.items():
        if isinstance(label, str):
            labels.append((key, label))
        else:
            problems.append(f"{_join(path, key)}: expected a string, got {_type_name(label)}")
    return tuple(sorted(labels))


def _read_thread_groups(path: str, value: object, problems: list[str]) -> tuple[ThreadGroup, ...]:
    tables = _array_of_tables(path, value, "profile.thread_group", problems)
    groups = [_read_thread_group(f"{path}[{i}]", table, problems) for i, table in enumerate(tables)]
    problems.extend(_duplicate_names(path, tables, "thread group"))
    return tuple(group for group in groups if group is not None)


def _read_thread_group(path: str, value: object, problems: list[str]) -> ThreadGroup | None:
    table = _table(path, value, _GROUP_FIELDS, problems)
    if table is None:
        return None
    name = _name(f"{path}.name", _string(path, table, "name", problems), problems)
    comm_prefix = _comm_prefix(
        f"{path}.comm_prefix", _string(path, table, "comm_prefix", problems), problems
    )
    tier = _tier(f"{path}.tier", _string(path, table, "tier", problems), problems)
    if name is None or comm_prefix is None or tier is None:
        return None
    return ThreadGroup(name, comm_prefix, tier)


# Field checks.


def _array_of_tables(path: str, value: object, header: str, problems: list[str]) -> list[object]:
    """The items of an array of tables; a problem when it is missing, empty or not an array."""
    if value is None or value == []:
        problems.append(f"{path}: no [[{header}]] tables (at least one is required)")
        return []
    if not isinstance(value, list):
        problems.append(
            f"{path}: expected an array of tables ([[{header}]]), got {_type_name(value)}"
        )
        return []
    return value


def _table(
    path: str, value: object, fields: tuple[str, ...], problems: list[str]
) -> dict[str, object] | None:
    """`value` as a table; a problem for a wrong type and for each unknown key."""
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a table, got {_type_name(value)}")
        return None
    for key in value:
        if key not in fields:
            problems.append(f"{_join(path, key)}: unknown field (fields: {', '.join(fields)})")
    return value


def _string(path: str, table: dict[str, object], key: str, problems: list[str]) -> str | None:
    """The required string `table[key]`."""
    value = table.get(key)
    if value is None:
        problems.append(f"{path}.{key}: missing (required)")
        return None
    if not isinstance(value, str):
        problems.append(f"{path}.{key}: expected a string, got {_type_name(value)}")
        return None
    return value


def _name(path: str, name: str | None, problems: list[str]) -> str | None:
    if name is not None and not _NAME.fullmatch(name):
        problems.append(f"{path}: {name!r} is not a valid name ({_NAME_RULE})")
        return None
    return name


def _comm_prefix(path: str, prefix: str | None, problems: list[str]) -> str | None:
    if prefix is None:
        return None
    size = len(prefix.encode("utf-8"))
    if not prefix:
        problems.append(f"{path}: empty (give the start of the threads' comm)")
    elif "\0" in prefix:
        problems.append(f"{path}: contains a NUL character")
    elif size > MAX_COMM_PREFIX_BYTES:
        problems.append(
            f"{path}: {prefix!r} is {size} bytes in UTF-8, more than {MAX_COMM_PREFIX_BYTES}"
            " (the kernel keeps at most that much of a thread's comm, so nothing would match)"
        )
    else:
        return prefix
    return None


def _tier(path: str, text: str | None, problems: list[str]) -> Tier | None:
    if text is None:
        return None
    try:
        return Tier.parse(text)
    except ValueError as exc:
        problems.append(f"{path}: {exc}")
        return None


def _duplicate_names(path: str, tables: list[object], what: str) -> list[str]:
    """A problem for each table whose string `name` an earlier table already has."""
    problems: list[str] = []
    first: dict[str, int] = {}
    for index, table in enumerate(tables):
        name = table.get("name") if isinstance(table, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            problems.append(
                f"{path}[{index}].name: duplicate {what} name {name!r} (also {path}[{first[name]}])"
            )
        else:
            first[name] = index
    return problems


def _file_budget(tables: list[object]) -> list[str]:
    count = sum(
        len(groups)
        for table in tables
        if isinstance(table, dict) and isinstance(groups := table.get("thread_group"), list)
    )
    if count <= MAX_THREAD_GROUPS:
        return []
    return [
        f"profile: {count} thread groups in this file, more than {MAX_THREAD_GROUPS}"
        " (each becomes one scheduler layer)"
    ]


# Combining files.


def _redefinitions(profiles: Sequence[Profile]) -> list[str]:
    problems: list[str] = []
    first: dict[str, Profile] = {}
    for profile in profiles:
        earlier = first.get(profile.name)
        if earlier is None:
            first[profile.name] = profile
            continue
        if earlier.source == profile.source:
            where = f"twice in {profile.source}"
        else:
            where = f"in both {earlier.source} and {profile.source}"
        problems.append(f"profile {profile.name!r}: defined {where}")
    return problems


def _over_budget(profiles: Sequence[Profile], max_thread_groups: int) -> list[str]:
    per_source: dict[str, int] = {}
    for profile in profiles:
        per_source[profile.source] = per_source.get(profile.source, 0) + len(profile.thread_groups)
    total = sum(per_source.values())
    if total <= max_thread_groups:
        return []
    counts = ", ".join(f"{source}: {count}" for source, count in per_source.items())
    return [
        f"thread_group: {total} thread groups in total ({counts}), more than the budget of"
        f" {max_thread_groups} (each becomes one scheduler layer)"
    ]


# Messages.


def _join(path: str, key: str | int) -> str:
    """`path` extended by a key (quoted unless bare, as TOML writes it) or an array index."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    shown = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{path}.{shown}" if path else shown


def _type_name(value: object) -> str:
    for kind, name in _TYPE_NAMES:
        if isinstance(value, kind):
            return name
    return type(value).__name__
