"""Workload profile parsing: the example format, selector semantics and every rejection."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from temper.policy.errors import ProfileError
from temper.policy.profiles import (
    MAX_COMM_PREFIX_BYTES,
    MAX_PROFILE_BYTES,
    MAX_THREAD_GROUPS,
    Profile,
    Selector,
    ThreadGroup,
    combine_profiles,
    parse_profiles,
)
from temper.policy.tiers import Tier

EXAMPLE = b"""
[[profile]]
name = "checkout-gc"
[profile.selector]
namespace = "shop"
match_labels = { app = "checkout" }
[[profile.thread_group]]
name = "gc"
comm_prefix = "GC Thread"
tier = "background"
"""


def profile_toml(name: str = "p", groups: int = 1, prefix: str = "g") -> str:
    """A valid [[profile]] table with `groups` thread groups named {prefix}0, {prefix}1, ..."""
    lines = ["[[profile]]", f'name = "{name}"']
    for index in range(groups):
        lines += [
            "[[profile.thread_group]]",
            f'name = "{prefix}{index}"',
            f'comm_prefix = "worker-{index}"',
            'tier = "low"',
        ]
    return "\n".join(lines) + "\n"


def problems_of(text: str | bytes, source: str = "test.toml") -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(ProfileError) as caught:
        parse_profiles(data, source)
    assert caught.value.source == source
    assert caught.value.problems, "a ProfileError must carry at least one problem"
    return caught.value.problems


def group_with(field_line: str) -> str:
    """A profile whose only thread group has `field_line` in place of the default fields."""
    return f'[[profile]]\nname = "p"\n[[profile.thread_group]]\n{field_line}\n'


def group_with_comm(prefix: str) -> str:
    return group_with(f'name = "g"\ncomm_prefix = {json.dumps(prefix)}\ntier = "low"')


# The valid format.


def test_example_parses_to_exact_values() -> None:
    assert parse_profiles(EXAMPLE, "/etc/temper/profiles/shop.toml") == (
        Profile(
            name="checkout-gc",
            selector=Selector(namespace="shop", match_labels=(("app", "checkout"),)),
            thread_groups=(ThreadGroup(name="gc", comm_prefix="GC Thread", tier=Tier.BACKGROUND),),
            source="/etc/temper/profiles/shop.toml",
        ),
    )


def test_absent_selector_is_the_empty_selector() -> None:
    (profile,) = parse_profiles(profile_toml().encode(), "a.toml")
    assert profile.selector == Selector()
    assert profile.selector.selects("anything", {"x": "y"})


def test_profiles_and_groups_keep_file_order() -> None:
    text = profile_toml("b", groups=2) + profile_toml("a", groups=1, prefix="h")
    profiles = parse_profiles(text.encode(), "a.toml")
    assert [p.name for p in profiles] == ["b", "a"]
    assert [g.name for g in profiles[0].thread_groups] == ["g0", "g1"]


def test_match_labels_are_sorted_by_key() -> None:
    text = """
[[profile]]
name = "p"
selector = { match_labels = { zone = "b", app = "x", "app.kubernetes.io/name" = "y" } }
[[profile.thread_group]]
name = "g"
comm_prefix = "w"
tier = "low"
"""
    (profile,) = parse_profiles(text.encode(), "a.toml")
    assert profile.selector.match_labels == (
        ("app", "x"),
        ("app.kubernetes.io/name", "y"),
        ("zone", "b"),
    )


def test_every_tier_name_is_accepted() -> None:
    for tier in Tier:
        text = group_with(f'name = "g"\ncomm_prefix = "w"\ntier = "{tier.value}"')
        (profile,) = parse_profiles(text.encode(), "a.toml")
        assert profile.thread_groups[0].tier is tier


@pytest.mark.parametrize("name", ["a", "0", "a-b", "x" * 24, "gc-2"])
def test_valid_names(name: str) -> None:
    (profile,) = parse_profiles(profile_toml(name).encode(), "a.toml")
    assert profile.name == name


# Selector semantics.


@pytest.mark.parametrize(
    ("selector", "namespace", "labels", "expected"),
    [
        (Selector(), "any", {}, True),
        (Selector(), "any", {"app": "x"}, True),
        (Selector(namespace="shop"), "shop", {}, True),
        (Selector(namespace="shop"), "other", {}, False),
        (Selector(match_labels=(("app", "x"),)), "any", {"app": "x", "extra": "1"}, True),
        (Selector(match_labels=(("app", "x"),)), "any", {"app": "y"}, False),
        (Selector(match_labels=(("app", "x"),)), "any", {}, False),
        (Selector(match_labels=(("app", "x"), ("tier", "web"))), "any", {"app": "x"}, False),
        (Selector("shop", (("app", "x"),)), "shop", {"app": "x"}, True),
        (Selector("shop", (("app", "x"),)), "other", {"app": "x"}, False),
        (Selector("shop", (("app", "x"),)), "shop", {"app": "y"}, False),
    ],
)
def test_selector_selects(
    selector: Selector, namespace: str, labels: dict[str, str], expected: bool
) -> None:
    assert selector.selects(namespace, labels) is expected


def test_selector_built_unsorted_equals_sorted() -> None:
    assert Selector(match_labels=(("b", "1"), ("a", "2"))) == Selector(
        match_labels=(("a", "2"), ("b", "1"))
    )


# Rejections: each names the field path.

VALID_GROUP = '[[profile.thread_group]]\nname = "g"\ncomm_prefix = "w"\ntier = "low"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "profile: no [[profile]] tables", id="empty-file"),
        pytest.param("profile = []", "profile: no [[profile]] tables", id="empty-array"),
        pytest.param(
            '[profile]\nname = "p"\n',
            "profile: expected an array of tables ([[profile]]), got table",
            id="profile-as-table",
        ),
        pytest.param(
            "profile = [1]", "profile[0]: expected a table, got integer", id="profile-not-table"
        ),
        pytest.param(
            "colour = 1\n" + profile_toml(),
            "colour: unknown top-level key",
            id="unknown-top-level",
        ),
        pytest.param("[[profile]]\n" + VALID_GROUP, "profile[0].name: missing", id="no-name"),
        pytest.param(
            "[[profile]]\nname = 7\n" + VALID_GROUP,
            "profile[0].name: expected a string, got integer",
            id="name-integer",
        ),
        pytest.param(
            "[[profile]]\nname = 2024-01-01\n" + VALID_GROUP,
            "profile[0].name: expected a string, got date",
            id="name-date",
        ),
        pytest.param(
            "[[profile]]\nname = true\n" + VALID_GROUP,
            "profile[0].name: expected a string, got boolean",
            id="name-boolean",
        ),
        pytest.param(
            profile_toml("Checkout"), "profile[0].name: 'Checkout' is not a valid", id="upper"
        ),
        pytest.param(profile_toml("x" * 25), "profile[0].name: 'xxx", id="name-25-chars"),
        pytest.param(profile_toml("-a"), "profile[0].name: '-a' is not a valid", id="lead-dash"),
        pytest.param(profile_toml("a-"), "profile[0].name: 'a-' is not a valid", id="end-dash"),
        pytest.param(profile_toml("a_b"), "profile[0].name: 'a_b' is not", id="underscore"),
        pytest.param(
            '[[profile]]\nname = "a\\n"\n' + VALID_GROUP,
            "profile[0].name: 'a\\n' is not a valid name",
            id="trailing-newline",
        ),
        pytest.param(
            '[[profile]]\nname = "p"\nthread_groups = 1\n' + VALID_GROUP,
            "profile[0].thread_groups: unknown field (fields: name, selector, thread_group)",
            id="unknown-profile-field",
        ),
        pytest.param(
            '[[profile]]\nname = "p"\n',
            "profile[0].thread_group: no [[profile.thread_group]] tables",
            id="no-thread-group",
        ),
        pytest.param(
            '[[profile]]\nname = "p"\nthread_group = []\n',
            "profile[0].thread_group: no [[profile.thread_group]] tables",
            id="empty-thread-group",
        ),
        pytest.param(
            '[[profile]]\nname = "p"\nthread_group = "gc"\n',
            "profile[0].thread_group: expected an array of tables ([[profile.thread_group]]),"
            " got string",
            id="thread-group-string",
        ),
        pytest.param(
            '[[profile]]\nname = "p"\nthread_group = ["gc"]\n',
            "profile[0].thread_group[0]: expected a table, got string",
            id="thread-group-item-string",
        ),
        pytest.param(
            '[[profile]]\nname = "p"\nselector = "all"\n' + VALID_GROUP,
            "profile[0].selector: expected a table, got string",
            id="selector-string",
        ),
        pytest.param(
            '[[profile]]\nname = "p"\nselector = { labels = {} }\n' + VALID_GROUP,
            "profile[0].selector.labels: unknown field (fields: namespace, match_labels)",
            id="selector-unknown-field",
        ),
        pytest.param(
            '[[profile]]\nname = "p"\nselector = { namespace = 3 }\n' + VALID_GROUP,
            "profile[0].selector.namespace: expected a string, got integer",
            id="namespace-integer",
        ),
        pytest.param(
            '[[profile]]\nname = "p"\nselector = { namespace = "Shop" }\n' + VALID_GROUP,
            "profile[0].selector.namespace: 'Shop' is not a DNS label",
            id="namespace-upper",
        ),
        pytest.param(
            '[[profile]]\nname = "p"\nselector = { namespace = "'
            + "a" * 64
            + '" }\n'
            + VALID_GROUP,
            "profile[0].selector.namespace: 'aaaa",
            id="namespace-64-chars",
        ),
        pytest.param(
            '[[profile]]\nname = "p"\nselector = { namespace = "" }\n' + VALID_GROUP,
            "profile[0].selector.namespace: '' is not a DNS label",
            id="namespace-empty",
        ),
        pytest.param(
            '[[profile]]\nname = "p"\nselector = { match_labels = ["app"] }\n' + VALID_GROUP,
            "profile[0].selector.match_labels: expected a table, got array",
            id="match-labels-array",
        ),
        pytest.param(
            '[[profile]]\nname = "p"\nselector = { match_labels = { app = 1.5 } }\n' + VALID_GROUP,
            "profile[0].selector.match_labels.app: expected a string, got float",
            id="label-value-float",
        ),
        pytest.param(
            '[[profile]]\nname = "p"\nselector = { match_labels = { "a.io/n" = 1 } }\n'
            + VALID_GROUP,
            'profile[0].selector.match_labels."a.io/n": expected a string, got integer',
            id="label-dotted-key",
        ),
        pytest.param(
            group_with('name = "g"\ncomm_prefix = "w"\ntier = "low"\nnice = 5'),
            "profile[0].thread_group[0].nice: unknown field (fields: name, comm_prefix, tier)",
            id="group-unknown-field",
        ),
        pytest.param(
            group_with('comm_prefix = "w"\ntier = "low"'),
            "profile[0].thread_group[0].name: missing",
            id="group-no-name",
        ),
        pytest.param(
            group_with('name = "g"\ntier = "low"'),
            "profile[0].thread_group[0].comm_prefix: missing",
            id="group-no-comm-prefix",
        ),
        pytest.param(
            group_with('name = "g"\ncomm_prefix = "w"'),
            "profile[0].thread_group[0].tier: missing",
            id="group-no-tier",
        ),
        pytest.param(
            group_with('name = "G C"\ncomm_prefix = "w"\ntier = "low"'),
            "profile[0].thread_group[0].name: 'G C' is not a valid name",
            id="group-bad-name",
        ),
        pytest.param(
            group_with('name = "g"\ncomm_prefix = ["w"]\ntier = "low"'),
            "profile[0].thread_group[0].comm_prefix: expected a string, got array",
            id="comm-prefix-array",
        ),
        pytest.param(
            group_with_comm(""),
            "profile[0].thread_group[0].comm_prefix: empty",
            id="comm-prefix-empty",
        ),
        pytest.param(
            group_with_comm("GC\x00"),
            "profile[0].thread_group[0].comm_prefix: contains a NUL",
            id="comm-prefix-nul",
        ),
        pytest.param(
            group_with('name = "g"\ncomm_prefix = "w"\ntier = "urgent"'),
            "profile[0].thread_group[0].tier: unknown tier 'urgent'"
            " (tiers: critical, high, normal, low, background)",
            id="tier-unknown",
        ),
        pytest.param(
            group_with('name = "g"\ncomm_prefix = "w"\ntier = 1'),
            "profile[0].thread_group[0].tier: expected a string, got integer",
            id="tier-integer",
        ),
        pytest.param(
            group_with('name = "g"\ncomm_prefix = "w"\ntier = { level = 1 }'),
            "profile[0].thread_group[0].tier: expected a string, got table",
            id="tier-table",
        ),
        pytest.param(
            group_with('name = "g"\ncomm_prefix = "w"\ntier = 07:32:00'),
            "profile[0].thread_group[0].tier: expected a string, got time",
            id="tier-time",
        ),
        pytest.param(
            profile_toml("a") + profile_toml("b") + profile_toml("a"),
            "profile[2].name: duplicate profile name 'a' (also profile[0])",
            id="duplicate-profile",
        ),
        pytest.param(
            profile_toml("a", groups=1) + VALID_GROUP.replace('"g"', '"g0"'),
            "profile[0].thread_group[1].name: duplicate thread group name 'g0'"
            " (also profile[0].thread_group[0])",
            id="duplicate-group",
        ),
        pytest.param(
            profile_toml("a", groups=5) + profile_toml("b", groups=MAX_THREAD_GROUPS - 4),
            f"profile: {MAX_THREAD_GROUPS + 1} thread groups in this file, more than"
            f" {MAX_THREAD_GROUPS}",
            id="file-over-budget",
        ),
        pytest.param(
            '[[profile]\nname = "p"\n',
            "file: TOML syntax error: ",
            id="toml-syntax",
        ),
        pytest.param("a = " + "1" * 5000, "file: not valid TOML", id="integer-over-digit-limit"),
        pytest.param(
            '[[profile]]\nname = "p"\nselector = { match_labels = { app = [[[[1]]]] } }\n'
            + VALID_GROUP,
            "profile[0].selector.match_labels.app[0][0]: nested 7 levels deep, at most 6",
            id="nested-too-deep",
        ),
    ],
)
def test_invalid_file_names_the_field(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_syntax_error_carries_line_and_column() -> None:
    problems = problems_of('[[profile]]\nname = "p"\nthis is not toml\n')
    assert len(problems) == 1
    assert problems[0].startswith("file: TOML syntax error: ")
    assert "line 3" in problems[0]
    assert "column" in problems[0]


def test_not_utf8() -> None:
    problems = problems_of(b'[[profile]]\nname = "\xff"\n')
    assert problems == ["file: not UTF-8 (invalid byte at offset 20)"]


def test_three_problems_are_all_reported() -> None:
    text = """
[[profile]]
name = "Bad Name"
colour = "red"
[[profile.thread_group]]
name = "gc"
comm_prefix = "GC Thread"
tier = "urgent"
"""
    problems = problems_of(text)
    assert len(problems) == 3, problems
    assert problems[0].startswith("profile[0].colour: unknown field")
    assert problems[1].startswith("profile[0].name: 'Bad Name' is not a valid name")
    assert problems[2].startswith("profile[0].thread_group[0].tier: unknown tier 'urgent'")


def test_problems_in_several_profiles_are_all_reported() -> None:
    text = profile_toml("A") + profile_toml("b") + "[[profile]]\nname = 5\n"
    problems = problems_of(text)
    assert [p.split(":")[0] for p in problems] == [
        "profile[0].name",
        "profile[2].name",
        "profile[2].thread_group",
    ]


def test_error_message_lists_the_problems_and_source() -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profiles(profile_toml("A").encode(), "/etc/temper/profiles/x.toml")
    message = str(caught.value)
    assert message.startswith("/etc/temper/profiles/x.toml: invalid workload profile")
    assert "profile[0].name: 'A'" in message


def test_oversized_file_is_one_problem_and_not_parsed() -> None:
    data = b"#" * (MAX_PROFILE_BYTES + 1)  # a valid TOML comment, so only the size is wrong
    problems = problems_of(data)
    assert problems == [
        f"file: {MAX_PROFILE_BYTES + 1} bytes, more than the limit of {MAX_PROFILE_BYTES} bytes"
    ]


def test_file_of_exactly_the_size_limit_is_parsed() -> None:
    text = profile_toml()
    data = text.encode() + b"#" * (MAX_PROFILE_BYTES - len(text))
    assert len(data) == MAX_PROFILE_BYTES
    assert len(parse_profiles(data, "a.toml")) == 1


def test_absurd_nesting_is_a_problem_not_a_recursion_error() -> None:
    problems = problems_of("a = " + "[" * 50_000)
    assert len(problems) == 1
    assert problems[0].startswith("file: nested too deeply")


def test_deep_table_headers_are_rejected_without_recursion() -> None:
    header = ".".join(["t"] * 2000)  # tomllib builds this without recursing
    problems = problems_of(f"[{header}]\n" + profile_toml())
    assert "t.t.t.t.t.t.t: nested 7 levels deep, at most 6 allowed" in problems


# comm prefixes are counted in bytes.


def test_fifteen_byte_comm_prefix_is_accepted() -> None:
    prefix = "x" * MAX_COMM_PREFIX_BYTES
    (profile,) = parse_profiles(group_with_comm(prefix).encode(), "a.toml")
    assert profile.thread_groups[0].comm_prefix == prefix


def test_sixteen_byte_comm_prefix_is_rejected() -> None:
    problems = problems_of(group_with_comm("x" * 16))
    assert len(problems) == 1
    assert problems[0].startswith("profile[0].thread_group[0].comm_prefix: ")
    assert "16 bytes" in problems[0]


def test_multibyte_comm_prefix_is_counted_in_bytes() -> None:
    prefix = "é" * 8  # 8 characters, 16 bytes in UTF-8
    problems = problems_of(group_with_comm(prefix))
    assert "16 bytes" in problems[0]
    accepted = "é" * 7 + "x"  # 15 bytes
    (profile,) = parse_profiles(group_with_comm(accepted).encode(), "a.toml")
    assert profile.thread_groups[0].comm_prefix == accepted


# Combining files.


def parsed(text: str, source: str) -> tuple[Profile, ...]:
    return parse_profiles(text.encode(), source)


def test_combine_concatenates_in_order() -> None:
    first = parsed(profile_toml("b") + profile_toml("a"), "one.toml")
    second = parsed(profile_toml("c"), "two.toml")
    combined = combine_profiles([first, second])
    assert [(p.name, p.source) for p in combined] == [
        ("b", "one.toml"),
        ("a", "one.toml"),
        ("c", "two.toml"),
    ]


def test_combine_rejects_a_name_defined_in_two_files() -> None:
    first = parsed(profile_toml("shared"), "one.toml")
    second = parsed(profile_toml("other") + profile_toml("shared"), "two.toml")
    with pytest.raises(ProfileError) as caught:
        combine_profiles([first, second])
    assert caught.value.source == "profiles"
    assert caught.value.problems == ["profile 'shared': defined in both one.toml and two.toml"]


def test_combine_rejects_the_same_file_given_twice() -> None:
    profiles = parsed(profile_toml("a"), "one.toml")
    with pytest.raises(ProfileError) as caught:
        combine_profiles([profiles, profiles])
    assert caught.value.problems == ["profile 'a': defined twice in one.toml"]


def test_combine_rejects_more_thread_groups_than_the_budget() -> None:
    first = parsed(profile_toml("a", groups=5), "one.toml")
    second = parsed(profile_toml("b", groups=4), "two.toml")
    with pytest.raises(ProfileError) as caught:
        combine_profiles([first, second])
    (problem,) = caught.value.problems
    assert problem.startswith("thread_group: 9 thread groups in total (one.toml: 5, two.toml: 4)")
    assert f"budget of {MAX_THREAD_GROUPS}" in problem


def test_combine_accepts_exactly_the_budget_and_honours_a_smaller_one() -> None:
    files = [parsed(profile_toml("a", groups=5), "1"), parsed(profile_toml("b", groups=3), "2")]
    assert len(combine_profiles(files)) == 2
    with pytest.raises(ProfileError, match="budget of 7"):
        combine_profiles(files, max_thread_groups=7)


def test_combine_reports_both_problems_together() -> None:
    files = [parsed(profile_toml("a", groups=8), "1"), parsed(profile_toml("a"), "2")]
    with pytest.raises(ProfileError) as caught:
        combine_profiles(files)
    assert len(caught.value.problems) == 2


def test_combine_of_nothing_is_empty() -> None:
    assert combine_profiles([]) == ()


# Arbitrary input never escapes as anything but ProfileError.


def parse_or_reject(data: bytes) -> tuple[Profile, ...] | None:
    """The profiles in `data`, or None when it is rejected with at least one problem."""
    problems: list[str] = []
    try:
        return parse_profiles(data, "fuzz.toml")
    except ProfileError as exc:
        problems = exc.problems
    assert problems
    return None


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_profile_error(data: bytes) -> None:
    parse_or_reject(data)


@given(st.text(max_size=2000))
def test_arbitrary_text_raises_only_profile_error(text: str) -> None:
    parse_or_reject(text.encode())


@given(st.text(alphabet="[]{}=,.\"'\n #abcgnprtuox0123456789-_", max_size=300))
def test_toml_like_text_raises_only_profile_error(text: str) -> None:
    parse_or_reject(text.encode())


# Profile-shaped documents with arbitrary values in every field, serialised as inline TOML, reach
# the validators (random bytes rarely get past the TOML parser).
FIELD_NAMES = ("profile", "name", "selector", "namespace", "match_labels", "thread_group")
KEYS = st.sampled_from((*FIELD_NAMES, "comm_prefix", "tier", "app", "x")) | st.text(max_size=5)
SCALARS = (
    st.text(max_size=20)
    | st.sampled_from(["gc", "shop", "low", "background", "urgent", "GC Thread"])
    | st.integers()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=30,
)


def to_toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON escapes are TOML escapes; DEL must be escaped in TOML but not in JSON.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(item) for item in value) + "]"
    assert isinstance(value, dict)
    pairs = (f"{to_toml(key)} = {to_toml(item)}" for key, item in value.items())
    return "{" + ", ".join(pairs) + "}"


def documents(wild: bool) -> st.SearchStrategy[dict[str, object]]:
    """Profile-shaped documents. Plausible ones use only near-valid field values, so some pass;
    wild ones may put anything anywhere and add unknown keys."""

    def field(good: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
        return good | VALUES if wild else good

    def table(
        required: dict[str, st.SearchStrategy[object]],
        optional: dict[str, st.SearchStrategy[object]],
    ) -> st.SearchStrategy[object]:
        if wild:  # any field may be missing, and unknown ones may appear
            return field(st.fixed_dictionaries({}, optional=required | optional | {"x": VALUES}))
        return st.fixed_dictionaries(required, optional=optional)

    group = table(
        {
            "name": field(st.sampled_from(["gc", "io", "db", "log", "Bad"])),
            "comm_prefix": field(st.sampled_from(["GC Thread", "x" * 15, "é" * 8]) | st.text()),
            "tier": field(st.sampled_from([t.value for t in Tier] + ["urgent"])),
        },
        {},
    )
    selector = table(
        {},
        {
            "namespace": field(st.sampled_from(["shop", "a-b", "c", "Shop", ""])),
            "match_labels": field(st.dictionaries(KEYS, st.text(max_size=5), max_size=3)),
        },
    )
    profile = table(
        {
            "name": field(st.sampled_from(["a", "b", "c", "checkout-gc", "-x"])),
            "thread_group": field(st.lists(group, min_size=0 if wild else 1, max_size=4)),
        },
        {"selector": selector},
    )
    return st.fixed_dictionaries(
        {"profile": field(st.lists(profile, min_size=0 if wild else 1, max_size=3))},
        optional={"x": VALUES} if wild else {},
    )


def render(document: dict[str, object]) -> bytes:
    return "".join(f"{to_toml(k)} = {to_toml(v)}\n" for k, v in document.items()).encode()


@given(documents(wild=True))
def test_wild_profile_shaped_documents_raise_only_profile_error(
    document: dict[str, object],
) -> None:
    parse_or_reject(render(document))


@given(documents(wild=False))
def test_plausible_documents_are_accepted_only_when_valid(document: dict[str, object]) -> None:
    profiles = parse_or_reject(render(document))
    if profiles is None:
        return
    assert profiles
    assert len({p.name for p in profiles}) == len(profiles)
    assert sum(len(p.thread_groups) for p in profiles) <= MAX_THREAD_GROUPS
    for profile in profiles:
        assert profile.name in {"a", "b", "c", "checkout-gc"}
        assert profile.selector.namespace in {None, "shop", "a-b", "c"}
        assert profile.thread_groups
        assert len({g.name for g in profile.thread_groups}) == len(profile.thread_groups)
        for group in profile.thread_groups:
            assert 0 < len(group.comm_prefix.encode()) <= MAX_COMM_PREFIX_BYTES
            assert "\0" not in group.comm_prefix
