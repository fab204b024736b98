"""Read the planner's input files: a node's pod list and workload profile files.

Files are read whole and parsed by the policy core; any problem comes back as a `HostReadError`
whose message starts with the file's path, so the CLI can print one clear line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from temper.host.errors import HostReadError
from temper.policy.errors import InputError
from temper.policy.pods import Pod, parse_pod_list
from temper.policy.profiles import MAX_PROFILE_BYTES, Profile, combine_profiles, parse_profiles

# A PodList for a node of 250+ pods is a few megabytes; anything far beyond is not a pod list.
MAX_POD_LIST_BYTES = 64 * 1024 * 1024


def read_pod_list(path: Path) -> tuple[Pod, ...]:
    """The pods in a PodList file, JSON or YAML (also several YAML documents of Pods or lists).

    The path `-` reads standard input, so `kubectl get pods -o json | temper plan --pods -` works.
    """
    text = _read_text(path, MAX_POD_LIST_BYTES)
    documents = _parse_documents(path, text)
    pods: list[Pod] = []
    for number, document in enumerate(documents, start=1):
        try:
            pods.extend(parse_pod_list(document))
        except InputError as exc:
            where = f"document {number}: " if len(documents) > 1 else ""
            raise HostReadError(path, f"{where}{exc}") from exc
    return tuple(pods)


def read_profiles(paths: Sequence[Path]) -> tuple[Profile, ...]:
    """All profiles of these files, validated together (ProfileError lists every problem)."""
    files = []
    for path in paths:
        data = _read_bytes(path, MAX_PROFILE_BYTES)
        files.append(parse_profiles(data, str(path)))
    return combine_profiles(files)


def _parse_documents(path: Path, text: str) -> list[object]:
    """JSON when it parses as JSON (fast for kubectl's output), YAML otherwise."""
    try:
        return [json.loads(text)]
    except json.JSONDecodeError as exc:
        json_error = exc
    except RecursionError as exc:
        raise HostReadError(path, "nested too deeply to be a pod list") from exc
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.MarkedYAMLError as exc:
        if text.lstrip().startswith(("{", "[")):
            raise HostReadError(path, f"invalid JSON: {json_error}") from json_error
        raise HostReadError(path, f"invalid YAML: {_yaml_problem(exc)}") from exc
    except (yaml.YAMLError, RecursionError) as exc:
        raise HostReadError(path, f"invalid YAML: {' '.join(str(exc).split())}") from exc
    if not documents:
        raise HostReadError(path, "no pod list in the file")
    return documents


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}{exc.problem or exc.context or 'cannot parse'}"


def _read_text(path: Path, limit: int) -> str:
    try:
        return _read_bytes(path, limit).decode()
    except UnicodeDecodeError as exc:
        raise HostReadError(path, "not UTF-8 text") from exc


def _read_bytes(path: Path, limit: int) -> bytes:
    """The file's bytes, at most `limit` of them (more means the file is too large)."""
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with path.open("rb") as handle:
                data = handle.read(limit + 1)
    except OSError as exc:
        raise HostReadError(path, f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise HostReadError(path, f"larger than {limit} bytes")
    return data
