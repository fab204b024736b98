"""`temper-cli`: ask the node's agent for its state, move pods between tiers, reload, trace.

    temper-cli status
    temper-cli tier assign NAMESPACE/NAME TIER
    temper-cli tier clear NAMESPACE/NAME
    temper-cli reload
    temper-cli config show [--running | --planned | --diff]
    temper-cli trace capture [--tier TIER]... --seconds N [--max-mb M] -o FILE [--force]

    options, before or after the command:
      [--socket PATH | --address HOST:PORT --tls-ca FILE --tls-cert FILE --tls-key FILE]
      [--json] [--timeout SECONDS]

The agent serves its API on a unix socket (default /run/temper/api.sock, or $TEMPER_SOCKET) and
checks the caller's uid and groups; over TCP it wants mutual TLS, hence the three files that go
with --address. Arguments are checked here before anything is sent, with the rules the agent
applies, so a typo costs no round trip and never reaches the audit log.

Exit codes:
    0  ok
    1  the agent refused or failed the call (FAILED_PRECONDITION, INTERNAL, a missed deadline)
    2  usage, or an invalid argument (found here, or by the agent: INVALID_ARGUMENT)
    3  the agent is not reachable (not running, wrong socket or address, not ready yet)
    4  permission denied
    5  not found (the pod is not on this node)
    6  busy (RESOURCE_EXHAUSTED: a capture already runs, a bound was hit)
  130  interrupted

Errors print one line on stderr, `temper-cli: COMMAND: what went wrong`; never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from pathlib import Path
from typing import BinaryIO

# gRPC's core writes lines of its own to stderr (a failed TLS handshake, at INFO) that the one
# error line below already says. It reads this once, when grpc is first imported; an operator's
# own setting (GRPC_VERBOSITY=DEBUG to see them) wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc

from temper import __version__
from temper.api.client import (
    DEFAULT_SOCKET,
    DEFAULT_TIMEOUT_S,
    RELOAD_TIMEOUT_S,
    TRACE_MARGIN_S,
    AgentClient,
)
from temper.api.errors import (
    AgentUnreachable,
    ApiError,
    Busy,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from temper.api.v1 import agent_pb2 as pb
from temper.cli import agentrender as show
from temper.policy.assignments import PodKey, parse_pod_key
from temper.policy.errors import InputError
from temper.policy.tiers import Tier

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_DENIED, EXIT_NOT_FOUND, EXIT_BUSY = range(1, 7)
EXIT_INTERRUPTED = 130
_EXIT_CODES: dict[type[ApiError], int] = {
    InvalidArgument: EXIT_USAGE,
    AgentUnreachable: EXIT_UNREACHABLE,
    PermissionDenied: EXIT_DENIED,
    NotFound: EXIT_NOT_FOUND,
    Busy: EXIT_BUSY,
}
# agent.proto's bounds for a capture, checked here so a typo costs no round trip.
MAX_TRACE_S = 60
MAX_TRACE_MB = 64
_SOCKET_HINT = " (--socket or TEMPER_SOCKET to point elsewhere)"
_TCP_HINT = " (check --address and the --tls-* files)"
_CONFIG_VIEWS = {
    "running": pb.CONFIG_VIEW_RUNNING,
    "planned": pb.CONFIG_VIEW_PLANNED,
    "diff": pb.CONFIG_VIEW_DIFF,
}
_NO_CONFIG = {
    "running": "no scheduler runs a config of the agent's (--planned shows the plan)",
    "planned": "no plan yet: the agent has not seen its first pod list",
    "diff": "no difference: the running config is the planned one",
}

_TIER_HELP = f"one of: {', '.join(t.value for t in Tier)}"
_TLS_FILES = (
    ("--tls-ca", "PEM: the CA certificate that verifies the agent's"),
    ("--tls-cert", "PEM: this client's certificate, which the agent verifies"),
    ("--tls-key", "PEM: the private key of --tls-cert"),
)

Command = Callable[[AgentClient, argparse.Namespace], str]


class CommandError(Exception):
    """A failure found here rather than by the agent; carries its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check_connection_options(parser, args)
    try:
        with _connect(args) as client:
            sys.stdout.write(args.run(client, args))
    except ApiError as exc:
        return _fail(args, f"{exc}{_hint(exc, args)}", _EXIT_CODES.get(type(exc), EXIT_FAILED))
    except CommandError as exc:
        return _fail(args, str(exc), exc.exit_code)
    except OSError as exc:  # writing the capture, or stdout
        return _fail(args, _os_error_text(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", EXIT_INTERRUPTED)
    return 0


def _fail(args: argparse.Namespace, message: str, exit_code: int) -> int:
    print(f"temper-cli: {args.command}: {message}", file=sys.stderr)
    return exit_code


def _os_error_text(exc: OSError) -> str:
    """`PATH: strerror`, naming the destination of a rename."""
    path = exc.filename2 or exc.filename
    return f"{path}: {exc.strerror}" if path and exc.strerror else str(exc)


def _hint(exc: ApiError, args: argparse.Namespace) -> str:
    """Which option changes the outcome, when one does."""
    if isinstance(exc, AgentUnreachable) and not exc.reached:
        return _TCP_HINT if args.address else _SOCKET_HINT
    if exc.code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return " (--timeout to wait longer)"
    return ""


def _connect(args: argparse.Namespace) -> AgentClient:
    timeout = args.timeout
    timeouts = {
        "timeout_s": timeout or DEFAULT_TIMEOUT_S,
        "reload_timeout_s": timeout or RELOAD_TIMEOUT_S,
        "trace_margin_s": timeout or TRACE_MARGIN_S,
    }
    if args.address is None:
        socket = args.socket or Path(os.environ.get("TEMPER_SOCKET") or DEFAULT_SOCKET)
        return AgentClient.unix(socket, **timeouts)
    host, port = args.address
    ca, cert, key = (_read_tls_file(args, name) for name in ("tls_ca", "tls_cert", "tls_key"))
    return AgentClient.tls(host, port, ca=ca, cert=cert, key=key, **timeouts)


def _read_tls_file(args: argparse.Namespace, name: str) -> bytes:
    path: Path = getattr(args, name)
    try:
        return path.read_bytes()
    except OSError as exc:
        flag = "--" + name.replace("_", "-")
        raise CommandError(f"{flag} {path}: {exc.strerror}", EXIT_USAGE) from exc


def _check_connection_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    tls = [args.tls_ca, args.tls_cert, args.tls_key]
    if args.address is None and any(tls):
        parser.error("--tls-ca, --tls-cert and --tls-key go with --address")
    if args.address is not None and args.socket is not None:
        parser.error("--socket and --address: give one")
    if args.address is not None and not all(tls):
        parser.error("--address needs --tls-ca, --tls-cert and --tls-key (mutual TLS)")


# The commands: each makes its call and returns what goes to stdout.


def _status(client: AgentClient, args: argparse.Namespace) -> str:
    answer = client.status()
    return show.to_json(answer) if args.json else show.status_text(answer)


def _tier_assign(client: AgentClient, args: argparse.Namespace) -> str:
    answer = client.assign_tier(args.pod, args.tier)
    return show.to_json(answer) if args.json else show.assigned_text(args.pod, answer)


def _tier_clear(client: AgentClient, args: argparse.Namespace) -> str:
    answer = client.clear_tier(args.pod)
    return show.to_json(answer) if args.json else show.cleared_text(args.pod, answer)


def _reload(client: AgentClient, args: argparse.Namespace) -> str:
    answer = client.reload()
    return show.to_json(answer) if args.json else show.reload_text(answer)


def _config_show(client: AgentClient, args: argparse.Namespace) -> str:
    answer = client.config(_CONFIG_VIEWS[args.view])
    if args.json:
        return show.to_json(answer)
    text = {"running": answer.running, "planned": answer.planned, "diff": answer.diff}[args.view]
    if not text:
        print(f"temper-cli: {args.command}: {_NO_CONFIG[args.view]}", file=sys.stderr)
        return ""
    return text if text.endswith("\n") else text + "\n"


def _trace_capture(client: AgentClient, args: argparse.Namespace) -> str:
    """Stream the capture into FILE.part and rename it: FILE is whole or absent, never partial."""
    output: Path = args.output
    if output.exists() and not args.force:
        raise CommandError(f"{output} exists (--force to overwrite it)", EXIT_USAGE)
    part = output.with_name(output.name + ".part")
    try:
        file = part.open("wb")
    except OSError as exc:
        raise CommandError(f"cannot write {part}: {exc.strerror}", EXIT_USAGE) from exc
    try:
        with file:
            replies = client.capture_trace(args.tiers, math.ceil(args.seconds * 1000), args.max_mb)
            summary = _receive(replies, file, show.ProgressLine(sys.stderr))
        part.replace(output)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return show.to_json(summary) if args.json else show.capture_text(output, summary)


def _receive(
    replies: Generator[pb.CaptureTraceReply, None, None],
    file: BinaryIO,
    progress: show.ProgressLine,
) -> pb.TraceSummary:
    """Progress to stderr, chunks to `file`; the summary, once its size matches what came."""
    summary: pb.TraceSummary | None = None
    received = 0
    with closing(replies):
        try:
            for reply in replies:
                kind = reply.WhichOneof("reply")
                if kind == "progress":
                    progress.show(reply.progress)
                elif kind == "summary":
                    summary = reply.summary
                elif kind == "chunk":
                    received += file.write(reply.chunk)
        finally:
            progress.end()
    if summary is None:
        raise CommandError("the agent ended the capture without a summary", EXIT_FAILED)
    if received != summary.size_bytes:
        message = f"the agent sent {received} of the file's {summary.size_bytes} bytes"
        raise CommandError(message, EXIT_FAILED)
    return summary


# The command line.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="temper-cli",
        description=__doc__.splitlines()[0],
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"temper-cli {__version__}")
    _add_common_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)
    _add_command(commands, "status", _status, "the node's mode, scheduler, tiers and linter")
    _add_tier_commands(commands)
    _add_command(commands, "reload", _reload, "plan again and restart the scheduler on the plan")
    _add_config_commands(commands)
    _add_trace_commands(commands)
    return parser


def _epilog() -> str:
    """The docstring's exit-code table, so --help and the module say the same."""
    lines = __doc__.splitlines()
    start = lines.index("Exit codes:")
    return "\n".join(lines[start : lines.index("", start)])


def _add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    run: Command,
    summary: str,
    *,
    command: str | None = None,
) -> argparse.ArgumentParser:
    """A leaf command: it runs `run`, and takes the common options after its name too."""
    parser = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:])
    parser.set_defaults(run=run, command=command or name)
    _add_common_options(parser, suppress=True)
    return parser


def _add_tier_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tier = commands.add_parser("tier", help="assign a tier to a pod, or clear the assignment")
    actions = tier.add_subparsers(dest="action", metavar="ACTION", required=True)
    assign = _add_command(
        actions,
        "assign",
        _tier_assign,
        "put a pod into a tier, over its priority and QoS class; kept across restarts",
        command="tier assign",
    )
    assign.add_argument("pod", type=_pod, metavar="NAMESPACE/NAME")
    assign.add_argument("tier", type=_tier, metavar="TIER", help=_TIER_HELP)
    clear = _add_command(
        actions,
        "clear",
        _tier_clear,
        "remove a pod's assignment: its priority or QoS class decides again",
        command="tier clear",
    )
    clear.add_argument("pod", type=_pod, metavar="NAMESPACE/NAME")


def _add_config_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = commands.add_parser("config", help="the scheduler's config, running and planned")
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    summary = "print the scx_layered config (JSON) the scheduler runs (default), or another view"
    config_show = _add_command(actions, "show", _config_show, summary, command="config show")
    views = config_show.add_mutually_exclusive_group()
    for view, help_text in (
        ("running", "the config the running scheduler was given (the default)"),
        ("planned", "the config of the agent's newest plan"),
        ("diff", "a unified diff from the running to the planned config"),
    ):
        views.add_argument(
            f"--{view}", dest="view", action="store_const", const=view, help=help_text
        )
    config_show.set_defaults(view="running")


def _add_trace_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    trace = commands.add_parser("trace", help="record what the scheduler did for some tiers")
    actions = trace.add_subparsers(dest="action", metavar="ACTION", required=True)
    capture = _add_command(
        actions,
        "capture",
        _trace_capture,
        "record sched_switch/sched_wakeup of some tiers' threads into a local file",
        command="trace capture",
    )
    capture.add_argument(
        "--tier",
        dest="tiers",
        type=_tier,
        action="append",
        default=[],
        metavar="TIER",
        help=f"record this tier's threads; repeat for several (default: all). {_TIER_HELP}",
    )
    capture.add_argument(
        "--seconds", type=_trace_seconds, required=True, metavar="N", help="0 < N <= 60"
    )
    capture.add_argument(
        "--max-mb",
        type=_trace_max_mb,
        default=0,
        metavar="M",
        help=f"stop when the file reaches M MiB, 1 to {MAX_TRACE_MB} (default: {MAX_TRACE_MB})",
    )
    capture.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="FILE",
        help="where to write the capture; FILE.part until it is complete",
    )
    capture.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def _add_common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Where the agent is and how to print. A command's copies leave unset values alone."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--socket",
        type=Path,
        default=default(None),
        metavar="PATH",
        help=f"the agent's unix socket (default: $TEMPER_SOCKET, else {DEFAULT_SOCKET})",
    )
    group.add_argument(
        "--address",
        type=_address,
        default=default(None),
        metavar="HOST:PORT",
        help="the agent's TCP listener instead; needs the three --tls-* files",
    )
    for flag, help_text in _TLS_FILES:
        group.add_argument(flag, type=Path, default=default(None), metavar="FILE", help=help_text)
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the agent's answer as JSON (agent.proto's field names)",
    )
    group.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=default(None),
        metavar="SECONDS",
        help=f"how long to wait for an answer (default: {DEFAULT_TIMEOUT_S:g}; "
        f"reload {RELOAD_TIMEOUT_S:g}; trace capture: its length + {TRACE_MARGIN_S:g})",
    )


# Argument types: checked here with the agent's rules, each error naming what to type instead.


def _pod(text: str) -> PodKey:
    try:
        return parse_pod_key(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _tier(text: str) -> Tier:
    try:
        return Tier.parse(text.lower())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _trace_seconds(text: str) -> float:
    seconds = _float(text)
    if not 0 < seconds <= MAX_TRACE_S:
        raise argparse.ArgumentTypeError(f"{text}: more than 0 and at most {MAX_TRACE_S} seconds")
    return seconds


def _trace_max_mb(text: str) -> int:
    try:
        mb = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a whole number") from None
    if not 1 <= mb <= MAX_TRACE_MB:
        raise argparse.ArgumentTypeError(f"{text}: 1 to {MAX_TRACE_MB} MiB")
    return mb


def _positive_seconds(text: str) -> float:
    seconds = _float(text)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text}: more than 0 seconds")
    return seconds


def _address(text: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port`."""
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host, int(port)


def _float(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a number") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{text!r}: not a finite number")
    return number


if __name__ == "__main__":
    raise SystemExit(main())
