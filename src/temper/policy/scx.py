"""The `scx_layered` config: layer specs, their JSON form, their limits, and first-match placement.

`scx_layered` reads a JSON array of layer specs (scx_layered 1.1.2 `config.rs`). It silently ignores
fields it does not know, and `--print-and-exit` stops before its own limit checks
(docs/scx-layered.md#the-config-file), so this module is where Temper holds its output to the
scheduler's rules:

- at most 16 layers (`MAX_LAYERS`), the last one a catch-all whose matches are exactly `[[]]`;
- at most 32 OR blocks per layer (`MAX_LAYER_MATCH_ORS`) and 16 `CgroupRegex` rules in all;
- comm prefixes of at most 15 bytes (the kernel's 16-byte comm holds a NUL);
- weights 1..10000; only fields the scheduler knows.

`place` answers "which layer would this thread join?" by the scheduler's own rule: the first
layer, in file order, with an OR block whose every rule matches. The planner uses it to check its
own output, `temper plan --format explain` to report placements, and the agent can use it to ask
whether a running config misplaces a pod.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from temper.policy.cgroups import regex_subject
from temper.policy.tiers import Tier

MAX_LAYERS = 16
MAX_OR_BLOCKS = 32
MAX_CGROUP_REGEXES = 16
# The kernel keeps a thread's name (comm) in 16 bytes including the NUL (TASK_COMM_LEN), and
# scx_layered's MAX_COMM is 16 too: a longer prefix could never match any thread.
MAX_COMM_PREFIX_BYTES = 15
MIN_WEIGHT, MAX_WEIGHT = 1, 10_000
MAX_LAYER_NAME_BYTES = 64  # of the 128-byte BPF name, 64 are for the user's part (intf.h)
# Flags our configs rely on, from our patch of the pinned scx_layered (docs/adr/0003): layers
# that share a CPU are served in descending weight, so a weight is a serving rank.
SCHEDULER_FLAGS = ("--layer-order-by-weight",)
# The patch's flag for a replacement: load, then attach once no scheduler is attached.
ATTACH_WHEN_FREE = "--attach-when-free"

# The fields of scx_layered 1.1.2's LayerSpec and each LayerKind that Temper writes. A field
# outside these sets would be dropped silently by the scheduler, so `check_config` refuses it.
SPEC_FIELDS = frozenset({"name", "comment", "matches", "kind"})
COMMON_FIELDS = frozenset({"weight", "preempt", "exclusive", "slice_us"})
SIZED_FIELDS = COMMON_FIELDS | {"util_range", "cpus_range", "protected"}
KIND_FIELDS: dict[str, frozenset[str]] = {
    "Confined": SIZED_FIELDS,
    "Grouped": SIZED_FIELDS,
    "Open": COMMON_FIELDS,
}


class LayerKind(enum.Enum):
    CONFINED = "Confined"
    GROUPED = "Grouped"
    OPEN = "Open"


class Rule(enum.Enum):
    """The match rules Temper uses."""

    CGROUP_PREFIX = "CgroupPrefix"
    CGROUP_REGEX = "CgroupRegex"
    COMM_PREFIX = "CommPrefix"


@dataclass(frozen=True)
class Match:
    rule: Rule
    value: str

    def matches(self, cgroup_path: str, comm: str | None) -> bool:
        if self.rule is Rule.CGROUP_PREFIX:
            return cgroup_path.startswith(self.value)
        if self.rule is Rule.CGROUP_REGEX:
            return _compiled(self.value).search(regex_subject(cgroup_path)) is not None
        return comm is not None and comm.startswith(self.value)

    def to_json(self) -> dict[str, str]:
        return {self.rule.value: self.value}


AndBlock = tuple[Match, ...]


@dataclass(frozen=True)
class LayerSpec:
    """One layer. `tier` is None for the host catch-all."""

    name: str
    tier: Tier | None
    kind: LayerKind
    matches: tuple[AndBlock, ...]
    weight: int
    cpus_range: tuple[int, int] | None = None
    util_range: tuple[float, float] | None = None
    protected: bool = False
    exclusive: bool = False
    preempt: bool = False
    slice_us: int | None = None  # None: scx_layered's default slice (20 ms in 1.1.2)
    comment: str = ""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.util_range is not None:
            body["util_range"] = list(self.util_range)
        if self.cpus_range is not None:
            body["cpus_range"] = list(self.cpus_range)
        for flag in ("protected", "exclusive", "preempt"):
            if getattr(self, flag):
                body[flag] = True
        if self.slice_us is not None:
            body["slice_us"] = self.slice_us
        body["weight"] = self.weight
        spec: dict[str, Any] = {"name": self.name}
        if self.comment:
            spec["comment"] = self.comment
        spec["matches"] = [[m.to_json() for m in block] for block in self.matches]
        spec["kind"] = {self.kind.value: body}
        return spec


def render_config(layers: Sequence[LayerSpec]) -> str:
    """The JSON text scx_layered is given: deterministic for equal layers."""
    return json.dumps([layer.to_json() for layer in layers], indent=2) + "\n"


def place(layers: Sequence[LayerSpec], cgroup_path: str, comm: str | None) -> LayerSpec | None:
    """The layer a thread joins: the first, in file order, with a fully matching AND block.

    `comm` None stands for a thread whose name no `CommPrefix` rule claims. To place many
    threads against one config, build a `Placer` once.
    """
    return Placer(layers).place(cgroup_path, comm)


class Placer:
    """First-match placement against one config, prepared for many lookups.

    Blocks that are a single `CgroupPrefix` (most of them) are tested together with one
    `str.startswith(tuple)`; the rest rule by rule, comm rules first, which are cheapest.
    """

    def __init__(self, layers: Sequence[LayerSpec]) -> None:
        self._layers = [(layer, *_split_blocks(layer.matches)) for layer in layers]

    def place(self, cgroup_path: str, comm: str | None) -> LayerSpec | None:
        for layer, prefixes, blocks in self._layers:
            if cgroup_path.startswith(prefixes):
                return layer
            if any(all(m.matches(cgroup_path, comm) for m in block) for block in blocks):
                return layer
        return None


def _split_blocks(blocks: tuple[AndBlock, ...]) -> tuple[tuple[str, ...], list[AndBlock]]:
    prefixes = tuple(b[0].value for b in blocks if len(b) == 1 and b[0].rule is Rule.CGROUP_PREFIX)
    others = [
        tuple(sorted(b, key=lambda m: m.rule is not Rule.COMM_PREFIX))
        for b in blocks
        if not (len(b) == 1 and b[0].rule is Rule.CGROUP_PREFIX)
    ]
    return prefixes, others


def check_config(layers: Sequence[LayerSpec]) -> list[str]:
    """Every way this config breaks scx_layered's rules; empty when it is valid."""
    problems: list[str] = []
    if not layers:
        return ["no layers"]
    if len(layers) > MAX_LAYERS:
        problems.append(f"{len(layers)} layers; scx_layered allows at most {MAX_LAYERS}")
    if layers[-1].matches != ((),):
        problems.append(f"last layer {layers[-1].name!r} is not a catch-all (matches [[]])")
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        problems.append("layer names are not unique")
    for layer in layers:
        problems.extend(_check_layer(layer, catch_all=layer is layers[-1]))
    regexes = sum(m.rule is Rule.CGROUP_REGEX for layer in layers for b in layer.matches for m in b)
    if regexes > MAX_CGROUP_REGEXES:
        problems.append(f"{regexes} CgroupRegex rules; scx_layered allows {MAX_CGROUP_REGEXES}")
    problems.extend(_check_fields(layers))
    return problems


def _check_layer(layer: LayerSpec, catch_all: bool) -> list[str]:
    where = f"layer {layer.name!r}"
    problems = []
    if not catch_all and (not layer.matches or any(not block for block in layer.matches)):
        problems.append(f"{where}: an empty match block outside the last layer")
    if len(layer.matches) > MAX_OR_BLOCKS:
        problems.append(f"{where}: {len(layer.matches)} OR blocks; at most {MAX_OR_BLOCKS}")
    for block in layer.matches:
        for m in block:
            if m.rule is Rule.COMM_PREFIX and len(m.value.encode()) > MAX_COMM_PREFIX_BYTES:
                problems.append(f"{where}: comm prefix {m.value!r} over 15 bytes")
    if not MIN_WEIGHT <= layer.weight <= MAX_WEIGHT:
        problems.append(f"{where}: weight {layer.weight} outside 1..10000")
    if len(layer.name.encode()) > MAX_LAYER_NAME_BYTES:
        problems.append(f"{where}: name over {MAX_LAYER_NAME_BYTES} bytes")
    problems.extend(_check_sizing(layer, where))
    return problems


def _check_sizing(layer: LayerSpec, where: str) -> list[str]:
    problems = []
    sized = layer.kind is not LayerKind.OPEN
    if sized and layer.util_range is None:
        problems.append(f"{where}: a {layer.kind.value} layer needs util_range")
    if layer.util_range is not None and not 0 <= layer.util_range[0] < layer.util_range[1]:
        problems.append(f"{where}: util_range {layer.util_range} needs 0 <= lo < hi")
    if layer.cpus_range is not None:
        low, high = layer.cpus_range
        if low > high or (layer.kind is LayerKind.CONFINED and high == 0):
            problems.append(f"{where}: cpus_range {layer.cpus_range} is empty")
    return problems


def _check_fields(layers: Sequence[LayerSpec]) -> list[str]:
    problems = []
    for layer in layers:
        spec = layer.to_json()
        unknown = set(spec) - SPEC_FIELDS
        ((kind, body),) = spec["kind"].items()
        unknown |= set(body) - KIND_FIELDS[kind]
        if unknown:
            problems.append(f"layer {layer.name!r}: fields scx_layered ignores: {sorted(unknown)}")
    return problems


# Bounded: the agent runs for months and every pod churn makes new patterns; an unbounded
# cache of them grew without end.
@lru_cache(maxsize=128)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
