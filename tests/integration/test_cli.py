"""`temper plan` end to end: files in, a config or an explanation out, one clear line on bad input.

Most tests call `temper.cli.main.main(argv)` in-process and read capsys; a few run the command as
a real process to prove its exit codes and that nothing ever prints a traceback.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

import temper
from temper.cli.main import main
from temper.policy.tiers import TIERS

EXAMPLE_DIR = Path(temper.__file__).parent / "examples" / "node-a"
EXAMPLE_PODS = EXAMPLE_DIR / "pods.yaml"
EXAMPLE_HOST = EXAMPLE_DIR / "host"
EXAMPLE_PROFILE = EXAMPLE_DIR / "profile.toml"

TIER_NAMES = {tier.value for tier in TIERS}
LAYER_KINDS = {"Confined", "Grouped", "Open"}
ERROR_PREFIX = "temper plan: error: "

CHECKOUT = "shop/checkout-6f7b9d4c8-2lq9n"
CART = "shop/cart-84c5f7d9b-x7m2k"
KUBE_PROXY = "kube-system/kube-proxy-7xk2p"
CLEANUP = "batch/cleanup-28391100-b7n4m"  # phase Succeeded: not planned
CHECKOUT_UID = "00005e1a-0000-0000-4000-800003333333"
EXAMPLE_LIVE_PODS = {
    "analytics/etl-nightly-28391040-9kqzt",
    "batch/report-builder-x9c2v",
    "kube-system/coredns-5d78c9869d-q8x4z",
    KUBE_PROXY,
    "ml/trainer-0",
    CART,
    CHECKOUT,
    "shop/search-7c9f8b6d5-j4h8w",
    "web/frontend-5b8d7c6f4-a1b2c",
    "web/frontend-5b8d7c6f4-d3e4f",
}


class Run(NamedTuple):
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Run:
    """`temper <argv>` in-process; an uncaught exception fails the test by propagating."""
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    """Run `temper <argv>`, expect argparse's exit 2, and return stderr."""
    with pytest.raises(SystemExit) as caught:
        main([str(arg) for arg in argv])
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def run_process(
    *argv: str | Path, command: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`temper <argv>` as a real process (`python -m temper.cli.main` unless `command` is given)."""
    base = command or [sys.executable, "-m", "temper.cli.main"]
    return subprocess.run(
        [*base, *map(str, argv)], capture_output=True, text=True, timeout=60, check=False
    )


def explain(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> dict[str, Any]:
    result = run_cli(capsys, "plan", *argv, "--format", "explain")
    assert (result.code, result.err) == (0, "")
    document: dict[str, Any] = json.loads(result.out)
    return document


def pods_by_key(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{pod['namespace']}/{pod['name']}": pod for pod in document["pods"]}


def assert_one_error_line(err: str, *fragments: str) -> None:
    """stderr is exactly one `temper plan: error:` line holding every fragment; no traceback."""
    assert err.startswith(ERROR_PREFIX), err
    assert err.endswith("\n"), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


# -- the bundled example ----------------------------------------------------------------------


def test_example_json_is_exactly_the_scx_layered_config(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "plan", "--example", "--format", "json")
    assert (result.code, result.err) == (0, "")
    config = json.loads(result.out)  # fails on anything printed besides the JSON
    assert isinstance(config, list)
    assert result.out.lstrip().startswith("[")
    assert result.out.endswith("]\n")
    assert config[-1]["name"] == "host"
    assert config[-1]["matches"] == [[]]
    for layer in config:
        assert len(layer["kind"]) == 1
        assert set(layer["kind"]) <= LAYER_KINDS, layer["name"]
    assert all(layer["matches"] != [[]] for layer in config[:-1])


def test_example_explain_document_shape(capsys: pytest.CaptureFixture[str]) -> None:
    document = explain(capsys, "--example")
    assert set(document) == {"layers", "pods", "warnings"}
    assert document["warnings"] == []
    layer_tiers = {}
    for layer in document["layers"]:
        assert set(layer) == {"name", "tier"}
        assert layer["tier"] in TIER_NAMES | {"host"}
        layer_tiers[layer["name"]] = layer["tier"]
    assert len(layer_tiers) == len(document["layers"]), "layer names must be unique"
    assert document["layers"][-1] == {"name": "host", "tier": "host"}
    for pod in document["pods"]:
        assert set(pod) == {"uid", "namespace", "name", "tier", "tier_source", "layer"}
        assert pod["tier"] in TIER_NAMES
        assert pod["layer"] in layer_tiers
        assert layer_tiers[pod["layer"]] == pod["tier"], pod["name"]


def test_example_explain_tiers_and_their_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    pods = pods_by_key(explain(capsys, "--example"))
    assert set(pods) == EXAMPLE_LIVE_PODS
    assert CLEANUP not in pods
    assert (pods[CHECKOUT]["tier"], pods[CHECKOUT]["tier_source"]) == ("critical", "priority")
    assert pods[CHECKOUT]["uid"] == CHECKOUT_UID
    # Guaranteed and no PriorityClass: the QoS-class default.
    assert (pods[CART]["tier"], pods[CART]["tier_source"]) == ("high", "qos-default")
    # system-node-critical is node plumbing: high, never critical.
    assert (pods[KUBE_PROXY]["tier"], pods[KUBE_PROXY]["tier_source"]) == ("high", "priority")


def test_example_table_names_layers_pods_and_machine(capsys: pytest.CaptureFixture[str]) -> None:
    document = explain(capsys, "--example")
    result = run_cli(capsys, "plan", "--example", "--format", "table")
    assert (result.code, result.err) == (0, "")
    lines = result.out.splitlines()
    assert lines[0].startswith("Machine: 16 CPUs, 8 cores x 2 threads")
    assert "16 CPUs" in result.out
    for layer in document["layers"]:
        assert any(line.startswith(layer["name"] + " ") for line in lines), layer["name"]
    for key in EXAMPLE_LIVE_PODS:
        assert any(line.startswith(key + " ") for line in lines), key
    assert "cleanup-28391100-b7n4m" not in result.out


def test_default_format_off_a_terminal_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert not sys.stdout.isatty()
    default = run_cli(capsys, "plan", "--example")
    explicit = run_cli(capsys, "plan", "--example", "--format", "json")
    assert default.code == explicit.code == 0
    assert default.out == explicit.out
    assert isinstance(json.loads(default.out), list)


def test_default_format_on_a_terminal_is_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    default = run_cli(capsys, "plan", "--example")
    table = run_cli(capsys, "plan", "--example", "--format", "table")
    assert default.out == table.out
    assert default.out.startswith("Machine: ")


# -- determinism and options -------------------------------------------------------------------


def test_pod_order_does_not_change_the_output(
    capsys: pytest.CaptureFixture[str], host_root: Path, tmp_path: Path
) -> None:
    document = yaml.safe_load(EXAMPLE_PODS.read_text(encoding="utf-8"))
    items = list(document["items"])
    shuffled = items[:]
    random.Random(20240917).shuffle(shuffled)
    assert shuffled != items
    reordered = tmp_path / "shuffled.json"
    reordered.write_text(json.dumps({**document, "items": shuffled}), encoding="utf-8")
    common = ("--host-root", host_root, "--profile", EXAMPLE_PROFILE)
    for fmt in ("json", "explain"):
        original = run_cli(capsys, "plan", "--pods", EXAMPLE_PODS, *common, "--format", fmt)
        again = run_cli(capsys, "plan", "--pods", reordered, *common, "--format", fmt)
        assert original.code == again.code == 0
        assert original.out.encode() == again.out.encode()


def test_example_host_and_synthetic_host_plan_alike(
    capsys: pytest.CaptureFixture[str], host_root: Path
) -> None:
    bundled = run_cli(capsys, "plan", "--example")
    synthetic = run_cli(
        capsys,
        "plan",
        "--pods",
        EXAMPLE_PODS,
        "--host-root",
        host_root,
        "--profile",
        EXAMPLE_PROFILE,
    )
    assert bundled.out == synthetic.out


def test_cgroup_driver_chooses_the_cgroup_paths(capsys: pytest.CaptureFixture[str]) -> None:
    cgroupfs = run_cli(capsys, "plan", "--example", "--cgroup-driver", "cgroupfs")
    systemd = run_cli(capsys, "plan", "--example", "--cgroup-driver", "systemd")
    default = run_cli(capsys, "plan", "--example")
    assert "kubepods/" in cgroupfs.out
    assert "kubepods.slice" not in cgroupfs.out
    assert f"kubepods/pod{CHECKOUT_UID}/" in cgroupfs.out
    assert "kubepods.slice" in systemd.out
    assert "kubepods/" not in systemd.out
    assert f"kubepods-pod{CHECKOUT_UID.replace('-', '_')}.slice/" in systemd.out
    assert default.out == systemd.out


def test_assign_moves_a_pod_to_the_operators_tier(capsys: pytest.CaptureFixture[str]) -> None:
    before = explain(capsys, "--example")
    after = explain(capsys, "--example", "--assign", f"{CART}=low")
    cart = pods_by_key(after)[CART]
    assert (cart["tier"], cart["tier_source"]) == ("low", "operator")
    layer_tiers = {layer["name"]: layer["tier"] for layer in after["layers"]}
    assert layer_tiers[cart["layer"]] == "low"
    unchanged = {k: v for k, v in pods_by_key(before).items() if k != CART}
    assert {k: v for k, v in pods_by_key(after).items() if k != CART} == unchanged


def test_assign_for_a_pod_not_on_the_node_is_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    document = explain(capsys, "--example", "--assign", "ghost/nobody=low")
    assert any("ghost/nobody" in warning for warning in document["warnings"])
    assert "operator" not in {pod["tier_source"] for pod in document["pods"]}


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("bad", "'bad': expected NAMESPACE/NAME=TIER"),
        ("shop=low", "expected NAMESPACE/NAME=TIER"),
        ("a/b/c=low", "expected NAMESPACE/NAME=TIER"),
        ("a/b=urgent", "unknown tier 'urgent'"),
    ],
)
def test_malformed_assign_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], assignment: str, message: str
) -> None:
    err = usage_error(capsys, "plan", "--example", "--assign", assignment)
    assert "argument --assign" in err
    assert message in err


def test_pods_are_required_without_example(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, "plan")
    assert "--pods" in err
    assert "Traceback" not in err


# -- workload profiles -------------------------------------------------------------------------


def test_profile_adds_a_thread_group_layer_first(
    capsys: pytest.CaptureFixture[str], host_root: Path
) -> None:
    common = ("--pods", EXAMPLE_PODS, "--host-root", host_root)
    without = explain(capsys, *common)
    with_profile = explain(capsys, *common, "--profile", EXAMPLE_PROFILE)
    assert not any(layer["name"].startswith("background.") for layer in without["layers"])
    first = with_profile["layers"][0]
    assert first == {"name": "background.checkout-gc.gc", "tier": "background"}
    config = json.loads(run_cli(capsys, "plan", *common, "--profile", EXAMPLE_PROFILE).out)
    assert {"CommPrefix": "GC Thread"} in config[0]["matches"][0]


def test_invalid_profile_lists_every_problem(
    capsys: pytest.CaptureFixture[str], host_root: Path, tmp_path: Path
) -> None:
    profile = tmp_path / "bad.toml"
    profile.write_text(
        '[[profile]]\nname = "p"\ncolour = "red"\n'
        '[[profile.thread_group]]\nname = "g"\ncomm_prefix = "GC"\ntier = "urgent"\n',
        encoding="utf-8",
    )
    result = run_cli(
        capsys, "plan", "--pods", EXAMPLE_PODS, "--host-root", host_root, "--profile", profile
    )
    assert (result.code, result.out) == (1, "")
    first, *problems = result.err.splitlines()
    assert first.startswith(f"{ERROR_PREFIX}{profile}: invalid workload profile")
    assert len(problems) == 2
    assert all(line.startswith("  - ") for line in problems)
    assert any("profile[0].colour: unknown field" in line for line in problems)
    assert any("tier: unknown tier 'urgent'" in line for line in problems)
    assert "Traceback" not in result.err


def test_profile_defined_in_two_files_names_both(
    capsys: pytest.CaptureFixture[str], host_root: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    for path in (first, second):
        path.write_bytes(EXAMPLE_PROFILE.read_bytes())
    result = run_cli(
        capsys,
        "plan",
        "--pods",
        EXAMPLE_PODS,
        "--host-root",
        host_root,
        "--profile",
        first,
        "--profile",
        second,
    )
    assert (result.code, result.out) == (1, "")
    assert "'checkout-gc'" in result.err
    assert str(first) in result.err
    assert str(second) in result.err


def test_profile_that_is_not_utf8_is_named(
    capsys: pytest.CaptureFixture[str], host_root: Path, tmp_path: Path
) -> None:
    profile = tmp_path / "latin1.toml"
    profile.write_bytes('[[profile]]\nname = "caf\u00e9"\n'.encode("latin-1"))
    result = run_cli(
        capsys, "plan", "--pods", EXAMPLE_PODS, "--host-root", host_root, "--profile", profile
    )
    assert (result.code, result.out) == (1, "")
    assert result.err.startswith(f"{ERROR_PREFIX}{profile}: ")
    assert "not UTF-8" in result.err


# -- bad input: exit 1, one line naming the file -------------------------------------------------


class BadCase(NamedTuple):
    argv: list[str | Path]
    named: Path  # the file the message must name
    fragment: str  # what the message must say about it


BadInput = Callable[[Path, Path, Callable[..., Any]], BadCase]


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _pods_case(data: str | bytes, fragment: str, name: str = "pods.json") -> BadInput:
    def case(tmp: Path, host: Path, pod_manifest: Callable[..., Any]) -> BadCase:
        pods = _write(tmp / name, data)
        return BadCase(["--pods", pods, "--host-root", host], pods, fragment)

    return case


def _missing_pods(tmp: Path, host: Path, pod_manifest: Callable[..., Any]) -> BadCase:
    pods = tmp / "nope.json"
    return BadCase(["--pods", pods, "--host-root", host], pods, "cannot read: No such file")


def _directory_pods(tmp: Path, host: Path, pod_manifest: Callable[..., Any]) -> BadCase:
    pods = tmp / "podsdir"
    pods.mkdir()
    return BadCase(["--pods", pods, "--host-root", host], pods, "cannot read")


def _pod_without_uid(tmp: Path, host: Path, pod_manifest: Callable[..., Any]) -> BadCase:
    anonymous = pod_manifest("anonymous", "web")
    del anonymous["metadata"]["uid"]
    document = {"kind": "List", "items": [pod_manifest("named", "web"), anonymous]}
    pods = _write(tmp / "pods.json", json.dumps(document))
    return BadCase(
        ["--pods", pods, "--host-root", host], pods, "items[1] (web/anonymous).metadata.uid"
    )


def _missing_host_root(tmp: Path, host: Path, pod_manifest: Callable[..., Any]) -> BadCase:
    missing = tmp / "no-such-host"
    return BadCase(["--pods", EXAMPLE_PODS, "--host-root", missing], missing, "does not exist")


def _host_root_is_a_file(tmp: Path, host: Path, pod_manifest: Callable[..., Any]) -> BadCase:
    root = _write(tmp / "host-file", "")
    return BadCase(["--pods", EXAMPLE_PODS, "--host-root", root], root, "is not a directory")


def _host_root_without_online(tmp: Path, host: Path, pod_manifest: Callable[..., Any]) -> BadCase:
    root = tmp / "empty-host"
    root.mkdir()
    online = root / "sys" / "devices" / "system" / "cpu" / "online"
    return BadCase(["--pods", EXAMPLE_PODS, "--host-root", root], online, "is missing")


POD_LIST = '{"apiVersion": "v1", "kind": "List", "items": []}'

BAD_INPUTS: dict[str, BadInput] = {
    "missing pods file": _missing_pods,
    "directory as pods file": _directory_pods,
    "malformed json": _pods_case('{"kind": "List", "items": [', "invalid JSON"),
    "malformed yaml": _pods_case("kind: List\nitems:\n  - a: [1\n", "invalid YAML", "pods.yaml"),
    "json array": _pods_case("[1, 2]", "expected a PodList object"),
    "json of another kind": _pods_case('{"kind": "Foo"}', "expected a PodList with an 'items'"),
    "empty file": _pods_case("", "no pod list in the file", "pods.yaml"),
    "utf-16": _pods_case(POD_LIST.encode("utf-16"), "not UTF-8"),
    "latin-1 bytes": _pods_case(b"kind: List\nitems: []\n# caf\xe9\n", "not UTF-8", "pods.yaml"),
    "pod without uid": _pod_without_uid,
    "missing host root": _missing_host_root,
    "host root is a file": _host_root_is_a_file,
    "host root without cpu/online": _host_root_without_online,
}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_line_naming_the_file(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    host_root: Path,
    pod_manifest: Callable[..., Any],
    case: BadInput,
) -> None:
    argv, named, fragment = case(tmp_path, host_root, pod_manifest)
    result = run_cli(capsys, "plan", *argv)
    assert (result.code, result.out) == (1, "")
    assert_one_error_line(result.err, str(named), fragment)


def test_pods_of_two_nodes_are_refused(
    capsys: pytest.CaptureFixture[str],
    host_root: Path,
    pod_manifest: Callable[..., Any],
    write_pod_list: Callable[..., Path],
) -> None:
    pods = write_pod_list([pod_manifest("a", node="node-a"), pod_manifest("b", node="node-b")])
    result = run_cli(capsys, "plan", "--pods", pods, "--host-root", host_root)
    assert (result.code, result.out) == (1, "")
    assert_one_error_line(result.err, "2 nodes", "node-a", "node-b", "spec.nodeName=")


def test_finished_pods_of_another_node_do_not_count(
    capsys: pytest.CaptureFixture[str],
    host_root: Path,
    pod_manifest: Callable[..., Any],
    write_pod_list: Callable[..., Path],
) -> None:
    pods = write_pod_list(
        [pod_manifest("a", node="node-a"), pod_manifest("b", node="node-b", phase="Succeeded")]
    )
    document = explain(capsys, "--pods", pods, "--host-root", host_root)
    assert [pod["name"] for pod in document["pods"]] == ["a"]


@pytest.mark.parametrize("problem", ["two nodes", "duplicate uid"])
def test_pod_set_errors_name_the_pods_file(
    capsys: pytest.CaptureFixture[str],
    host_root: Path,
    pod_manifest: Callable[..., Any],
    write_pod_list: Callable[..., Path],
    problem: str,
) -> None:
    second = (
        pod_manifest("b", node="node-b")
        if problem == "two nodes"
        else pod_manifest("b", uid="same-uid")
    )
    pods = write_pod_list([pod_manifest("a", uid="same-uid"), second])
    result = run_cli(capsys, "plan", "--pods", pods, "--host-root", host_root)
    assert result.code == 1
    assert_one_error_line(result.err, str(pods))


# -- as a real process -------------------------------------------------------------------------


def test_process_prints_the_example_config() -> None:
    done = run_process("plan", "--example", "--format", "json")
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout)[-1]["name"] == "host"


def test_console_script_exits_1_on_a_missing_file(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "temper"
    missing = tmp_path / "missing.json"
    done = run_process(
        "plan", "--pods", missing, "--host-root", EXAMPLE_HOST, command=[str(script)]
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert_one_error_line(done.stderr, str(missing))


def test_process_exits_1_on_malformed_yaml(tmp_path: Path) -> None:
    pods = _write(tmp_path / "pods.yaml", "kind: List\nitems: [\n")
    done = run_process("plan", "--pods", pods, "--host-root", EXAMPLE_HOST)
    assert (done.returncode, done.stdout) == (1, "")
    assert_one_error_line(done.stderr, str(pods), "invalid YAML")


@pytest.mark.parametrize(
    "argv",
    [["plan"], ["plan", "--example", "--assign", "a/b=urgent"], ["plan", "--format", "xml"], []],
    ids=["no pods", "unknown tier", "unknown format", "no command"],
)
def test_process_exits_2_on_usage_errors(argv: list[str]) -> None:
    done = run_process(*argv)
    assert (done.returncode, done.stdout) == (2, "")
    assert "usage: temper" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("cpu", ["1e999999999", "1e9999"])
def test_absurd_cpu_quantity_is_an_input_error(
    tmp_path: Path, pod_manifest: Callable[..., Any], write_pod_list: Callable[..., Path], cpu: str
) -> None:
    pods = write_pod_list([pod_manifest("huge", cpu_request=cpu)])
    done = run_process("plan", "--pods", pods, "--host-root", EXAMPLE_HOST)
    assert done.returncode == 1
    assert_one_error_line(done.stderr)
