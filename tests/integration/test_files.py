"""read_pod_list and read_profiles against real files: formats, limits and the errors they name."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import temper
import temper.host.files
from temper.host.errors import HostReadError
from temper.host.files import read_pod_list, read_profiles
from temper.policy.errors import InputError, ProfileError
from temper.policy.pods import Pod
from temper.policy.profiles import Selector, ThreadGroup
from temper.policy.tiers import QosClass, Tier

EXAMPLE_DIR = Path(temper.__file__).parent / "examples" / "node-a"

PodMaker = Callable[..., dict[str, Any]]


def two_pods(pod_manifest: PodMaker) -> list[dict[str, Any]]:
    return [
        pod_manifest("api", "shop", cpu_request="250m", cpu_limit="1", labels={"app": "api"}),
        pod_manifest("job", "batch", uid="uid-job", priority_class="temper-low"),
    ]


def keys(pods: tuple[Pod, ...]) -> list[str]:
    return [pod.key for pod in pods]


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# -- read_pod_list -------------------------------------------------------------------------------


def test_reads_a_json_pod_list(pod_manifest: PodMaker, write_pod_list: Callable[..., Path]) -> None:
    pods = read_pod_list(write_pod_list(two_pods(pod_manifest)))
    assert keys(pods) == ["shop/api", "batch/job"]
    api, job = pods
    assert (api.uid, api.node_name, api.phase) == ("uid-shop-api", "node-a", "Running")
    assert (api.cpu_request_millis, api.cpu_limit_millis) == (250, 1000)
    assert api.qos is QosClass.BURSTABLE
    assert dict(api.labels) == {"app": "api"}
    assert (job.uid, job.priority_class, job.qos) == ("uid-job", "temper-low", QosClass.BEST_EFFORT)


def test_yaml_and_json_give_the_same_pods(
    tmp_path: Path, pod_manifest: PodMaker, write_pod_list: Callable[..., Path]
) -> None:
    document = {"apiVersion": "v1", "kind": "List", "items": two_pods(pod_manifest)}
    from_yaml = read_pod_list(write(tmp_path / "pods.yaml", yaml.safe_dump(document)))
    from_json = read_pod_list(write_pod_list(document["items"]))
    assert from_yaml == from_json
    assert [dict(pod.labels) for pod in from_yaml] == [dict(pod.labels) for pod in from_json]


def test_reads_multi_document_yaml_of_single_pods(tmp_path: Path, pod_manifest: PodMaker) -> None:
    api, job = two_pods(pod_manifest)
    text = "---\n" + yaml.safe_dump_all([api, None, job], explicit_start=True) + "---\n"
    pods = read_pod_list(write(tmp_path / "pods.yaml", text))
    assert keys(pods) == ["shop/api", "batch/job"]


def test_reads_yaml_documents_mixing_lists_and_pods(tmp_path: Path, pod_manifest: PodMaker) -> None:
    api, job = two_pods(pod_manifest)
    lone = pod_manifest("lone", "web")
    documents = [{"kind": "List", "items": [api, job]}, lone]
    pods = read_pod_list(write(tmp_path / "pods.yaml", yaml.safe_dump_all(documents)))
    assert keys(pods) == ["shop/api", "batch/job", "web/lone"]


def test_reads_the_bundled_example() -> None:
    pods = read_pod_list(EXAMPLE_DIR / "pods.yaml")
    assert len(pods) == 11
    assert sum(pod.finished for pod in pods) == 1
    assert {pod.node_name for pod in pods} == {"node-a"}


def test_json_with_a_utf8_bom_is_read(
    tmp_path: Path, pod_manifest: PodMaker, write_pod_list: Callable[..., Path]
) -> None:
    plain = write_pod_list(two_pods(pod_manifest))
    with_bom = write(tmp_path / "bom.json", b"\xef\xbb\xbf" + plain.read_bytes())
    assert read_pod_list(with_bom) == read_pod_list(plain)


@pytest.mark.parametrize(
    "text", ["", "\n\n", "# kubectl printed nothing\n", "---\n", "--- \n---\n"]
)
def test_a_file_without_documents_is_an_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "pods.yaml", text)
    with pytest.raises(HostReadError, match="no pod list in the file") as caught:
        read_pod_list(path)
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ")


def test_oversize_guard(
    monkeypatch: pytest.MonkeyPatch, pod_manifest: PodMaker, write_pod_list: Callable[..., Path]
) -> None:
    path = write_pod_list(two_pods(pod_manifest))
    size = path.stat().st_size
    monkeypatch.setattr(temper.host.files, "MAX_POD_LIST_BYTES", size)
    assert len(read_pod_list(path)) == 2  # exactly at the limit is fine
    monkeypatch.setattr(temper.host.files, "MAX_POD_LIST_BYTES", size - 1)
    with pytest.raises(HostReadError, match=f"larger than {size - 1} bytes") as caught:
        read_pod_list(path)
    assert caught.value.path == path


@pytest.mark.parametrize(
    ("text", "problem", "cause"),
    [
        ('{"items": [', "invalid JSON", json.JSONDecodeError),
        ("items: [\n", "invalid YAML", yaml.YAMLError),
        ('{"kind": "List", "items": [{"metadata": {"name": "x"}}]}', "items[0]", InputError),
    ],
)
def test_errors_name_the_file_and_keep_the_cause(
    tmp_path: Path, text: str, problem: str, cause: type[Exception]
) -> None:
    path = write(tmp_path / "pods.txt", text)
    with pytest.raises(HostReadError) as caught:
        read_pod_list(path)
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ")
    assert problem in caught.value.problem
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value.__cause__, cause)


def test_missing_file_is_a_host_read_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(HostReadError, match="cannot read") as caught:
        read_pod_list(path)
    assert caught.value.path == path
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_yaml_flow_mapping_is_read_as_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "pods.yaml", "{kind: List, items: []}\n")
    assert read_pod_list(path) == ()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.json", "[" * 100_000 + "]" * 100_000),
        ("deep.yaml", "items: " + "[" * 100_000 + "]" * 100_000),
    ],
)
def test_deeply_nested_input_is_a_host_read_error(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(HostReadError) as caught:
        read_pod_list(path)
    assert caught.value.path == path


# -- read_profiles -------------------------------------------------------------------------------

BATCH_PROFILE = """
[[profile]]
name = "batch-compaction"
[profile.selector]
namespace = "batch"
[[profile.thread_group]]
name = "compact"
comm_prefix = "compactor"
tier = "low"
"""


def test_read_profiles_of_two_files_concatenates_in_order(tmp_path: Path) -> None:
    example = EXAMPLE_DIR / "profile.toml"
    batch = write(tmp_path / "batch.toml", BATCH_PROFILE)
    profiles = read_profiles([example, batch])
    assert [(p.name, p.source) for p in profiles] == [
        ("checkout-gc", str(example)),
        ("batch-compaction", str(batch)),
    ]
    assert profiles[0].selector == Selector("shop", (("app", "checkout"),))
    assert profiles[0].thread_groups == (ThreadGroup("gc", "GC Thread", Tier.BACKGROUND),)
    assert profiles[1].thread_groups == (ThreadGroup("compact", "compactor", Tier.LOW),)
    assert [p.name for p in read_profiles([batch, example])] == ["batch-compaction", "checkout-gc"]


def test_read_profiles_of_no_files_is_empty() -> None:
    assert read_profiles([]) == ()


def test_duplicate_profile_name_across_files_names_both(tmp_path: Path) -> None:
    first = write(tmp_path / "first.toml", BATCH_PROFILE)
    second = write(tmp_path / "second.toml", BATCH_PROFILE.replace("compactor", "merger"))
    with pytest.raises(ProfileError) as caught:
        read_profiles([first, second])
    (problem,) = caught.value.problems
    assert "'batch-compaction'" in problem
    assert str(first) in problem
    assert str(second) in problem


def test_invalid_profile_file_is_a_profile_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", BATCH_PROFILE.replace('"low"', '"urgent"'))
    with pytest.raises(ProfileError) as caught:
        read_profiles([path])
    assert caught.value.source == str(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert any("unknown tier 'urgent'" in problem for problem in caught.value.problems)


def test_unreadable_profile_file_is_a_host_read_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(HostReadError, match="cannot read") as caught:
        read_profiles([EXAMPLE_DIR / "profile.toml", path])
    assert caught.value.path == path
