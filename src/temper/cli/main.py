"""`temper`: the operator's command line.

    temper plan --pods FILE [--host-root DIR] [--cgroup-driver systemd|cgroupfs]
                [--profile FILE]... [--assign NAMESPACE/NAME=TIER]... [--format table|json|explain]
    temper plan --example

Errors of input (unreadable or malformed files, a missing host root, invalid profiles) print one
message naming the file and exit 1; usage errors exit 2. Never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.resources import as_file, files
from pathlib import Path

from temper import __version__
from temper.cli.render import FORMATS, render
from temper.host.errors import HostError, HostReadError
from temper.host.files import read_pod_list, read_profiles
from temper.host.machine import read_machine_shape
from temper.policy.cgroups import CgroupDriver
from temper.policy.errors import InputError, PolicyError
from temper.policy.planner import Plan, PlanSettings, plan_node
from temper.policy.tiers import Tier

EXAMPLE = "examples/node-a"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        plan = _plan(args)
    except (PolicyError, HostError) as exc:
        print(f"temper plan: error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(render(plan, args.format or _default_format()))
    return 0


def _plan(args: argparse.Namespace) -> Plan:
    if args.example:
        with as_file(files("temper") / EXAMPLE) as example:
            return _plan_files(
                example / "pods.yaml", example / "host", [example / "profile.toml"], args
            )
    if args.pods is None:
        args.plan_parser.error("the following arguments are required: --pods (or --example)")
    return _plan_files(args.pods, args.host_root, args.profile, args)


def _plan_files(
    pods_path: Path, host_root: Path, profile_paths: Sequence[Path], args: argparse.Namespace
) -> Plan:
    pods = read_pod_list(pods_path)
    profiles = read_profiles(profile_paths)
    shape = read_machine_shape(host_root)
    settings = PlanSettings(cgroup_driver=CgroupDriver(args.cgroup_driver))
    try:
        return plan_node(pods, shape, profiles, settings, dict(args.assign))
    except InputError as exc:  # a pod set that cannot be one node's: the pods file is at fault
        raise HostReadError(pods_path, str(exc)) from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="temper", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"temper {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser(
        "plan",
        help="print the scx_layered config Temper would run on a node",
        description="Plan one node: tiers for its pods and the scx_layered config enforcing them.",
    )
    plan.set_defaults(plan_parser=plan)
    source = plan.add_mutually_exclusive_group()
    source.add_argument(
        "--pods",
        type=Path,
        metavar="FILE",
        help="PodList of one node's pods, JSON or YAML (kubectl get pods -o json); - for stdin",
    )
    source.add_argument(
        "--example",
        action="store_true",
        help="plan the bundled example node (pods, machine shape and a profile)",
    )
    plan.add_argument(
        "--host-root",
        type=Path,
        default=Path("/"),
        metavar="DIR",
        help="root of the host whose /sys gives the machine shape (default: /)",
    )
    plan.add_argument(
        "--cgroup-driver",
        choices=[d.value for d in CgroupDriver],
        default=CgroupDriver.SYSTEMD.value,
        help="the kubelet's cgroup driver (default: systemd)",
    )
    plan.add_argument(
        "--profile",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="workload profile TOML file; repeat for several",
    )
    plan.add_argument(
        "--assign",
        type=_assignment,
        action="append",
        default=[],
        metavar="NAMESPACE/NAME=TIER",
        help="operator tier assignment; repeatable",
    )
    plan.add_argument(
        "--format",
        choices=FORMATS,
        help="table (default on a terminal), json (the scx_layered config; "
        "default otherwise) or explain (JSON: tiers and layers of every pod)",
    )
    return parser


def _assignment(text: str) -> tuple[str, Tier]:
    key, sep, tier = text.partition("=")
    if not sep or key.count("/") != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAMESPACE/NAME=TIER")
    try:
        return key, Tier.parse(tier)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _default_format() -> str:
    return "table" if sys.stdout.isatty() else "json"


if __name__ == "__main__":
    raise SystemExit(main())
