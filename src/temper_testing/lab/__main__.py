"""`python -m temper_testing.lab`: provision the lab kernel, or run one command in a guest.

python -m temper_testing.lab provision [--refresh]
    installs the host packages and the kernel when missing (cold: a few minutes, about
    120 MB of downloads), then prints the release and its paths; progress goes to stderr.
python -m temper_testing.lab run [--cpus N] [--cores C] [--threads T] [--memory-mb M]
                                 [--timeout-s S] [--share DIR[:rw]]... -- COMMAND...
    boots a guest, runs COMMAND as root in the host root (cwd /), prints its output and
    exits with its exit status. Exit 125 means the lab itself failed (the reason on stderr).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from temper_testing.lab.errors import LabError
from temper_testing.lab.provision import LabKernel, provision_kernel
from temper_testing.lab.vm import run_in_guest

LAB_FAILED = 125  # like `env` and container runtimes: the runner, not the command, failed


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "provision":
            _print_kernel(provision_kernel(_progress, refresh=args.refresh))
            return 0
        return _run(args)
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return LAB_FAILED


def parse_share(text: str) -> tuple[Path, bool]:
    """`DIR` (read-only) or `DIR:rw` / `DIR:ro` -> (path, writable)."""
    path, _, mode = text.rpartition(":")
    if mode in ("rw", "ro") and path:
        return Path(path), mode == "rw"
    return Path(text), False


def _run(args: argparse.Namespace) -> int:
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        raise LabError("no command given: python -m temper_testing.lab run [options] -- COMMAND...")
    result = run_in_guest(
        provision_kernel(_progress),
        shlex.join(command) + "\n",
        cpus=args.cpus,
        cores=args.cores,
        threads=args.threads,
        memory_mb=args.memory_mb,
        timeout_s=args.timeout_s,
        shares=args.share,
    )
    sys.stdout.write(result.output)
    sys.stdout.flush()
    _progress(f"guest exit status {result.returncode} after {result.wall_s:.1f} s")
    return result.returncode


def _print_kernel(kernel: LabKernel) -> None:
    print(f"release {kernel.release}")
    print(f"vmlinux {kernel.vmlinux}")
    print(f"initrd  {kernel.initrd}")
    print(f"config  {kernel.config}")


def _progress(line: str) -> None:
    print(f"lab: {line}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m temper_testing.lab",
        description="The kernel lab: a sched_ext kernel in QEMU.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    provision = commands.add_parser("provision", help="install the host packages and the kernel")
    provision.add_argument(
        "--refresh",
        action="store_true",
        help="ask the mirror for a newer kernel than the cached one",
    )
    run = commands.add_parser("run", help="run a command in a guest and exit with its status")
    run.add_argument("--cpus", type=int, default=4, help="vCPUs (default 4)")
    run.add_argument("--cores", type=int, default=2, help="cores per socket (default 2)")
    run.add_argument("--threads", type=int, default=2, help="SMT threads per core (default 2)")
    run.add_argument("--memory-mb", type=int, default=2048, help="guest memory (default 2048)")
    run.add_argument("--timeout-s", type=float, default=900, help="kill the guest after (900)")
    run.add_argument(
        "--share",
        type=parse_share,
        action="append",
        default=[],
        metavar="DIR[:rw]",
        help="a host directory at the same path in the guest; read-only unless :rw",
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND...")
    return parser


if __name__ == "__main__":
    sys.exit(main())
