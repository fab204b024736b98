"""The scx_layered config: its limits (check_config), first-match placement and the JSON form."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from temper.policy import scx
from temper.policy.scx import (
    KIND_FIELDS,
    SPEC_FIELDS,
    LayerKind,
    LayerSpec,
    Match,
    Rule,
    check_config,
    place,
    render_config,
)
from temper.policy.tiers import Tier

BURSTABLE = "kubepods.slice/kubepods-burstable.slice/"
POD = f"{BURSTABLE}kubepods-burstable-pod1234_ab.slice/"
CONTAINER = f"{POD}cri-containerd-abc.scope/"


def prefix(value: str) -> Match:
    return Match(Rule.CGROUP_PREFIX, value)


def comm(value: str) -> Match:
    return Match(Rule.COMM_PREFIX, value)


def regex(value: str) -> Match:
    return Match(Rule.CGROUP_REGEX, value)


def layer(
    name: str,
    *blocks: tuple[Match, ...],
    kind: LayerKind = LayerKind.OPEN,
    tier: Tier | None = Tier.NORMAL,
    weight: int = 100,
    **extra: Any,
) -> LayerSpec:
    """A layer matching `blocks` (default: one CgroupPrefix block named after the layer)."""
    matches = blocks or ((prefix(f"{name}/"),),)
    return LayerSpec(name, tier, kind, tuple(matches), weight, **extra)


def confined(name: str, *blocks: tuple[Match, ...], **extra: Any) -> LayerSpec:
    extra.setdefault("util_range", (0.4, 0.8))
    extra.setdefault("cpus_range", (1, 4))
    return layer(name, *blocks, kind=LayerKind.CONFINED, tier=Tier.CRITICAL, **extra)


HOST = LayerSpec("host", None, LayerKind.OPEN, ((),), 100)


def valid_config() -> list[LayerSpec]:
    return [
        confined("critical", protected=True, exclusive=True),
        layer(
            "normal",
            (prefix(BURSTABLE),),
            (regex(r"^/sys/fs/cgroup/kubepods/pod1(?:/|$)"),),
            kind=LayerKind.GROUPED,
            util_range=(0.5, 0.9),
        ),
        layer("gc", (prefix("kubepods"), comm("GC Thread")), tier=Tier.BACKGROUND, preempt=True),
        HOST,
    ]


# --- check_config ------------------------------------------------------------------------------


def test_valid_config_has_no_problems() -> None:
    assert check_config(valid_config()) == []


def test_catch_all_alone_is_valid() -> None:
    assert check_config([HOST]) == []


def test_no_layers_is_a_problem() -> None:
    assert check_config([]) == ["no layers"]


def _with_layers(count: int) -> list[LayerSpec]:
    return [layer(f"l{i}") for i in range(count - 1)] + [HOST]


def _regex_layers(per_layer: tuple[int, ...]) -> list[LayerSpec]:
    layers = []
    for index, count in enumerate(per_layer):
        blocks = [(regex(f"^/sys/fs/cgroup/r{index}-{n}(?:/|$)"),) for n in range(count)]
        layers.append(layer(f"r{index}", *blocks))
    return [*layers, HOST]


def _replace_first(**changes: Any) -> Callable[[], list[LayerSpec]]:
    def build() -> list[LayerSpec]:
        layers = valid_config()
        layers[0] = replace(layers[0], **changes)
        return layers

    return build


def _one_layer(spec: LayerSpec) -> Callable[[], list[LayerSpec]]:
    return lambda: [spec, HOST]


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        pytest.param(lambda: _with_layers(17), "17 layers", id="17-layers"),
        pytest.param(lambda: valid_config()[:-1], "not a catch-all", id="no-catch-all"),
        pytest.param(
            _one_layer(layer("wide", *[(prefix(f"p{i}/"),) for i in range(33)])),
            "33 OR blocks",
            id="33-or-blocks",
        ),
        pytest.param(lambda: _regex_layers((9, 8)), "17 CgroupRegex", id="17-regexes"),
        pytest.param(
            _one_layer(layer("c", (comm("sixteen-bytes-xx"),))), "over 15 bytes", id="comm-16"
        ),
        pytest.param(
            _one_layer(layer("c", (comm("\u00e9" * 8),))), "over 15 bytes", id="comm-16-utf8"
        ),
        pytest.param(_replace_first(weight=0), "weight 0", id="weight-0"),
        pytest.param(_replace_first(weight=10_001), "weight 10001", id="weight-10001"),
        pytest.param(
            lambda: [layer("same"), layer("same", (prefix("x/"),)), HOST],
            "not unique",
            id="duplicate-names",
        ),
        pytest.param(
            lambda: [layer("dup"), replace(HOST, name="dup")], "not unique", id="dup-catch-all"
        ),
        pytest.param(_replace_first(util_range=None), "needs util_range", id="no-util-range"),
        pytest.param(_replace_first(util_range=(0.5, 0.5)), "util_range", id="util-lo-eq-hi"),
        pytest.param(_replace_first(util_range=(0.9, 0.1)), "util_range", id="util-lo-gt-hi"),
        pytest.param(_replace_first(util_range=(-0.1, 0.5)), "util_range", id="util-negative"),
        pytest.param(_replace_first(cpus_range=(4, 2)), "cpus_range", id="cpus-min-gt-max"),
        pytest.param(_replace_first(cpus_range=(0, 0)), "cpus_range", id="confined-cpus-0"),
        pytest.param(_replace_first(name="n" * 65), "name over 64 bytes", id="name-65"),
        pytest.param(
            _replace_first(name="\u00e9" * 33), "name over 64 bytes", id="name-66-utf8-bytes"
        ),
        pytest.param(
            _one_layer(layer("empty", (prefix("a/"),), ())), "empty match block", id="empty-block"
        ),
        pytest.param(
            _one_layer(LayerSpec("none", Tier.LOW, LayerKind.OPEN, (), 100)),
            "empty match block",
            id="no-blocks",
        ),
        pytest.param(
            _one_layer(layer("o", protected=True)),
            "fields scx_layered ignores",
            id="open-protected",
        ),
        pytest.param(
            _one_layer(layer("o", util_range=(0.1, 0.2))),
            "fields scx_layered ignores",
            id="open-util-range",
        ),
    ],
)
def test_each_broken_rule_is_one_problem(
    build: Callable[[], list[LayerSpec]], fragment: str
) -> None:
    problems = check_config(build())
    assert len(problems) == 1, problems
    assert fragment in problems[0]


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: _with_layers(16), id="16-layers"),
        pytest.param(
            _one_layer(layer("wide", *[(prefix(f"p{i}/"),) for i in range(32)])), id="32-or-blocks"
        ),
        pytest.param(lambda: _regex_layers((8, 8)), id="16-regexes"),
        pytest.param(_one_layer(layer("c", (comm("fifteen-bytes-x"),))), id="comm-15"),
        pytest.param(_replace_first(weight=1), id="weight-1"),
        pytest.param(_replace_first(weight=10_000), id="weight-10000"),
        pytest.param(_replace_first(name="n" * 64), id="name-64"),
        pytest.param(_replace_first(util_range=(0.0, 0.01)), id="util-from-zero"),
        pytest.param(_replace_first(cpus_range=(2, 2)), id="cpus-min-eq-max"),
        pytest.param(_replace_first(cpus_range=None), id="no-cpus-range"),
    ],
)
def test_limits_are_inclusive(build: Callable[[], list[LayerSpec]]) -> None:
    assert check_config(build()) == []


def test_problems_name_the_layer() -> None:
    (problem,) = check_config(_replace_first(weight=0)())
    assert "'critical'" in problem


def test_every_problem_is_reported_not_just_the_first() -> None:
    layers = [layer("a", weight=0), layer("a", (comm("x" * 20),)), layer("tail")]
    problems = check_config(layers)
    assert len(problems) == 4, problems


@pytest.mark.parametrize(
    "catch_all",
    [
        replace(HOST, weight=0),
        replace(HOST, name="h" * 65),
        replace(HOST, kind=LayerKind.CONFINED),
    ],
    ids=["weight-0", "name-65", "confined-without-util-range"],
)
def test_catch_all_layer_is_checked_too(catch_all: LayerSpec) -> None:
    assert len(check_config([layer("a"), catch_all])) == 1


# --- place -------------------------------------------------------------------------------------


def test_first_matching_layer_in_file_order_wins() -> None:
    broad, narrow = layer("broad", (prefix("kubepods.slice/"),)), layer("narrow", (prefix(POD),))
    assert place([broad, narrow, HOST], CONTAINER, None) is broad
    assert place([narrow, broad, HOST], CONTAINER, None) is narrow
    assert place([narrow, broad, HOST], "system.slice/sshd.service/", None) is HOST


def test_and_block_needs_every_rule() -> None:
    gc = layer("gc", (prefix(POD), comm("GC ")))
    layers = [gc, HOST]
    assert place(layers, CONTAINER, "GC Thread#0") is gc
    assert place(layers, CONTAINER, "main") is HOST
    assert place(layers, "kubepods.slice/other/", "GC Thread#0") is HOST


def test_any_or_block_is_enough() -> None:
    either = layer("either", (prefix("a/"),), (comm("java"),))
    assert place([either], "a/x/", "python") is either
    assert place([either], "b/", "java-main") is either
    assert place([either], "b/", "python") is None


@pytest.mark.parametrize("value", ["", "GC"])
def test_comm_none_never_matches_a_comm_prefix(value: str) -> None:
    named = layer("named", (comm(value),))
    assert place([named, HOST], CONTAINER, None) is HOST
    assert place([named, HOST], CONTAINER, f"{value}x") is named


def test_cgroup_regex_matches_the_absolute_filesystem_path() -> None:
    absolute = layer("abs", (regex(r"^/sys/fs/cgroup/kubepods\.slice/kubepods-burstable\.slice/"),))
    relative = layer("rel", (regex(r"^kubepods\.slice/"),))
    assert place([relative, absolute, HOST], CONTAINER, None) is absolute
    assert place([relative, absolute, HOST], "system.slice/", None) is HOST


def test_cgroup_regex_subject_has_no_trailing_slash() -> None:
    exact = layer("exact", (regex(r"^/sys/fs/cgroup/kubepods/pod1$"),))
    assert place([exact], "kubepods/pod1/", None) is exact
    assert place([exact], "kubepods/pod1/c1/", None) is None


def test_cgroup_prefix_matches_the_relative_path() -> None:
    relative = layer("rel", (prefix("kubepods.slice/"),))
    absolute = layer("abs", (prefix("/sys/fs/cgroup/kubepods.slice/"),))
    assert place([absolute, relative], CONTAINER, None) is relative


def test_nothing_matching_places_nowhere() -> None:
    assert place([layer("a"), layer("b")], "c/", "comm") is None
    assert place([], "c/", "comm") is None


_paths = st.sampled_from(["a/", "a/b/", "b/", CONTAINER, "system.slice/x.service/", ""])
_comms = st.one_of(st.none(), st.sampled_from(["", "GC Thread", "java", "worker-1"]))
_rules = st.one_of(
    st.builds(prefix, st.sampled_from(["a/", "a/b", "b", "kubepods.slice/", ""])),
    st.builds(comm, st.sampled_from(["GC", "java", "w", ""])),
    st.builds(regex, st.sampled_from([r"^/sys/fs/cgroup/a(?:/|$)", r"slice", r"^/sys/fs/cgroup$"])),
)
_blocks = st.lists(st.tuples(_rules) | st.tuples(_rules, _rules), min_size=1, max_size=3)
_layer_lists = st.lists(
    st.builds(lambda i, blocks: layer(f"l{i}", *blocks), st.integers(0, 10**6), _blocks),
    max_size=5,
)


@given(_layer_lists, _paths, _comms)
def test_catch_all_only_catches_what_nothing_earlier_claims(
    layers: list[LayerSpec], path: str, name: str | None
) -> None:
    found = place([*layers, HOST], path, name)
    earlier = place(layers, path, name)
    assert found is not None
    assert found is (HOST if earlier is None else earlier)


@given(_layer_lists, _paths, _comms)
def test_placed_layer_has_a_fully_matching_block_and_no_earlier_one_does(
    layers: list[LayerSpec], path: str, name: str | None
) -> None:
    found = place(layers, path, name)
    position = len(layers) if found is None else next(i for i, x in enumerate(layers) if x is found)
    for earlier in layers[:position]:
        assert not any(all(m.matches(path, name) for m in b) for b in earlier.matches)
    if found is not None:
        assert any(all(m.matches(path, name) for m in b) for b in found.matches)


# --- render_config -----------------------------------------------------------------------------


def test_render_config_exact_json() -> None:
    rendered = json.loads(render_config(valid_config()))
    assert rendered == [
        {
            "name": "critical",
            "matches": [[{"CgroupPrefix": "critical/"}]],
            "kind": {
                "Confined": {
                    "util_range": [0.4, 0.8],
                    "cpus_range": [1, 4],
                    "protected": True,
                    "exclusive": True,
                    "weight": 100,
                }
            },
        },
        {
            "name": "normal",
            "matches": [
                [{"CgroupPrefix": BURSTABLE}],
                [{"CgroupRegex": r"^/sys/fs/cgroup/kubepods/pod1(?:/|$)"}],
            ],
            "kind": {"Grouped": {"util_range": [0.5, 0.9], "weight": 100}},
        },
        {
            "name": "gc",
            "matches": [[{"CgroupPrefix": "kubepods"}, {"CommPrefix": "GC Thread"}]],
            "kind": {"Open": {"preempt": True, "weight": 100}},
        },
        {"name": "host", "matches": [[]], "kind": {"Open": {"weight": 100}}},
    ]


def test_render_config_includes_a_comment_only_when_set() -> None:
    with_comment = json.loads(render_config([replace(HOST, comment="everything else")]))
    assert with_comment[0]["comment"] == "everything else"
    assert "comment" not in json.loads(render_config([HOST]))[0]


def test_render_config_is_deterministic_text() -> None:
    first, second = render_config(valid_config()), render_config(valid_config())
    assert first == second
    assert first.endswith("]\n")


_kinds = st.sampled_from(LayerKind)
_specs = st.builds(
    LayerSpec,
    name=st.text(min_size=1, max_size=20),
    tier=st.one_of(st.none(), st.sampled_from(Tier)),
    kind=_kinds,
    matches=st.lists(st.tuples() | st.tuples(_rules), max_size=3).map(tuple),
    weight=st.integers(-5, 20_000),
    cpus_range=st.one_of(st.none(), st.tuples(st.integers(0, 64), st.integers(0, 64))),
    util_range=st.one_of(st.none(), st.tuples(st.floats(0, 1), st.floats(0, 1))),
    protected=st.booleans(),
    exclusive=st.booleans(),
    preempt=st.booleans(),
    comment=st.text(max_size=10),
)


@given(st.lists(_specs, min_size=1, max_size=4, unique_by=lambda spec: spec.name))
def test_render_config_is_json_with_one_kind_key_and_only_known_fields_unless_flagged(
    layers: list[LayerSpec],
) -> None:
    text = render_config(layers)
    assert render_config(list(layers)) == text
    rendered = json.loads(text)
    assert [spec["name"] for spec in rendered] == [x.name for x in layers]
    problems = check_config(layers)
    for spec, source in zip(rendered, layers, strict=True):
        assert set(spec) <= SPEC_FIELDS
        ((kind, body),) = spec["kind"].items()
        assert kind == source.kind.value
        assert body["weight"] == source.weight
        unknown = set(body) - KIND_FIELDS[kind]
        flagged = f"layer {source.name!r}: fields scx_layered ignores: {sorted(unknown)}"
        assert (flagged in problems) == bool(unknown)


@given(st.lists(_specs.filter(lambda s: s.kind is not LayerKind.OPEN), max_size=4))
def test_sized_kinds_render_only_known_fields(layers: list[LayerSpec]) -> None:
    for spec in json.loads(render_config(layers)):
        ((kind, body),) = spec["kind"].items()
        assert kind in {"Confined", "Grouped"}
        assert set(body) <= KIND_FIELDS[kind]
        assert set(spec) <= scx.SPEC_FIELDS
