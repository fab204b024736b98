"""What an operator's actions leave on the host, against real files and sockets: the assignments
file, the audit log, the kernel's record of a unix socket's peer, and an agent that will not
start on a damaged assignments file."""

from __future__ import annotations

import errno
import grp
import json
import logging
import os
import pwd
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from temper.agent.main import main
from temper.host.errors import HostError, HostReadError
from temper.host.operator import (
    ASSIGNMENTS_FILE,
    AUDIT_FILE,
    MAX_ASSIGNMENTS_BYTES,
    AssignmentFile,
    AuditLog,
)
from temper.host.peercred import group_id, read_peer_credentials, user_name
from temper.policy.assignments import PodKey
from temper.policy.machine import synthetic_shape
from temper.policy.scx import ATTACH_WHEN_FREE, SCHEDULER_FLAGS
from temper.policy.tiers import Tier
from temper_testing.host.fakesys import write_fake_kernel, write_fake_sysfs

ASSIGNMENTS = {
    PodKey("shop", "checkout-0"): Tier.CRITICAL,
    PodKey("batch", "report"): Tier.BACKGROUND,
    PodKey("web", "api.v1"): Tier.HIGH,
}
UNUSED_UID = 4_000_000


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


def regular_file(tmp_path: Path) -> Path:
    """A plain file: a data directory under it can never be made."""
    path = tmp_path / "not-a-dir"
    path.write_text("")
    return path


# -- AssignmentFile ------------------------------------------------------------------------------


def test_no_file_means_no_assignments(tmp_path: Path) -> None:
    assert AssignmentFile(tmp_path / "data").read() == {}
    assert not (tmp_path / "data").exists()


def test_written_assignments_read_back(tmp_path: Path) -> None:
    data = tmp_path / "var/lib/temper"
    store = AssignmentFile(data)
    store.write(ASSIGNMENTS)
    assert store.path == data / ASSIGNMENTS_FILE
    assert AssignmentFile(data).read() == ASSIGNMENTS
    store.write({PodKey("shop", "checkout-0"): Tier.LOW})
    assert store.read() == {PodKey("shop", "checkout-0"): Tier.LOW}
    store.write({})
    assert store.read() == {}


def test_the_file_is_private_sorted_and_left_without_partials(tmp_path: Path) -> None:
    store = AssignmentFile(tmp_path)
    store.write(ASSIGNMENTS)
    store.write(dict(reversed(list(ASSIGNMENTS.items()))))
    assert mode_of(store.path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [ASSIGNMENTS_FILE]
    document = json.loads(store.path.read_text())
    assert document == {
        "version": 1,
        "assignments": {
            "batch/report": "background",
            "shop/checkout-0": "critical",
            "web/api.v1": "high",
        },
    }
    assert list(document["assignments"]) == sorted(document["assignments"])
    assert store.path.read_text().endswith("}\n")


def test_equal_assignments_give_equal_bytes(tmp_path: Path) -> None:
    first, second = AssignmentFile(tmp_path / "a"), AssignmentFile(tmp_path / "b")
    first.write(ASSIGNMENTS)
    second.write(dict(reversed(list(ASSIGNMENTS.items()))))
    assert first.path.read_bytes() == second.path.read_bytes()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "damaged: "),
        (b"", "damaged: "),
        (b"\xff\xfe\x00garbage", "damaged: "),
        (b'{"version": 2, "assignments": {}}', "not a version 1 assignments document"),
        (b'["shop/checkout-0", "critical"]', "not a version 1 assignments document"),
        (b'{"version": 1, "assignments": {"shop/a": "urgent"}}', "unknown tier 'urgent'"),
        (b'{"version": 1, "assignments": {"shop/../a": "low"}}', "assignment 'shop/../a'"),
        (b" " * (MAX_ASSIGNMENTS_BYTES + 1), f"larger than {MAX_ASSIGNMENTS_BYTES} bytes"),
        (b"[" * 100_000, "damaged: "),  # json raises RecursionError, not ValueError
    ],
    ids=["json", "empty", "encoding", "version", "list", "tier", "key", "size", "nesting"],
)
def test_a_damaged_file_is_an_error_naming_it(tmp_path: Path, content: bytes, problem: str) -> None:
    store = AssignmentFile(tmp_path)
    store.path.write_bytes(content)
    with pytest.raises(HostReadError) as caught:
        store.read()
    assert caught.value.path == store.path
    assert str(caught.value).startswith(f"{store.path}: ")
    assert problem in str(caught.value)


def test_an_unreadable_file_is_an_error_naming_it(tmp_path: Path) -> None:
    store = AssignmentFile(tmp_path)
    store.path.mkdir()
    with pytest.raises(HostReadError) as caught:
        store.read()
    assert caught.value.path == store.path
    assert "cannot read" in str(caught.value)


def test_a_write_that_cannot_be_made_is_a_host_error_naming_the_file(tmp_path: Path) -> None:
    store = AssignmentFile(regular_file(tmp_path) / "data")
    with pytest.raises(HostError) as caught:
        store.write(ASSIGNMENTS)
    assert str(caught.value).startswith(f"{store.path}: cannot write: ")


# -- AuditLog ------------------------------------------------------------------------------------


def record(seq: int) -> dict[str, object]:
    return {"seq": seq, "method": "AssignTier", "caller": {"via": "unix", "uid": 0}, "code": "OK"}


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_record_is_one_json_line_appended(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "data")
    assert [audit.write(record(seq)) for seq in range(3)] == [True, True, True]
    assert lines(audit.path) == [record(seq) for seq in range(3)]
    first = audit.path.read_text().splitlines()[0]
    assert first.startswith('{"caller": {"uid": 0, "via": "unix"}, "code": "OK"')  # sorted keys
    assert mode_of(audit.path) == 0o600
    assert AuditLog(tmp_path / "data").write(record(3))  # a new writer appends too
    assert [line["seq"] for line in lines(audit.path)] == [0, 1, 2, 3]


def test_the_log_is_rotated_at_max_bytes_keeping_one_old_generation(tmp_path: Path) -> None:
    size = len(json.dumps(record(10), sort_keys=True)) + 1
    audit = AuditLog(tmp_path, max_bytes=3 * size)
    for seq in range(10, 20):
        assert audit.write(record(seq))
    rotated = tmp_path / f"{AUDIT_FILE}.1"
    assert sorted(p.name for p in tmp_path.iterdir()) == [AUDIT_FILE, rotated.name]
    # Rotated before the 4th, 7th and 10th write: 10-12 and 13-15 are gone with older generations.
    assert [line["seq"] for line in lines(rotated)] == [16, 17, 18]
    assert [line["seq"] for line in lines(audit.path)] == [19]
    assert mode_of(audit.path) == 0o600


def test_a_write_that_fails_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    audit = AuditLog(regular_file(tmp_path) / "data")
    with caplog.at_level(logging.ERROR, logger="temper.host.operator"):
        assert audit.write(record(1)) is False
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert str(audit.path) in caplog.records[0].getMessage()
    assert "cannot write" in caplog.records[0].getMessage()


# -- peer credentials ----------------------------------------------------------------------------


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        yield ours, theirs


def test_peer_credentials_are_the_kernels_record_of_the_peer(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    for end in socket_pair:
        creds = read_peer_credentials(end)
        assert (creds.pid, creds.uid, creds.gid) == (os.getpid(), os.getuid(), os.getgid())
        # getgroups() may or may not list the primary group; SO_PEERGROUPS is the same list
        assert set(creds.groups) - {os.getgid()} == set(os.getgroups()) - {os.getgid()}
        assert creds.in_group(os.getgid())


def test_peer_credentials_over_a_connected_path(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(tmp_path / "api.sock"))
        server.listen(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(tmp_path / "api.sock"))
            accepted, _ = server.accept()
            with accepted:
                creds = read_peer_credentials(accepted)
    assert (creds.pid, creds.uid, creds.gid) == (os.getpid(), os.getuid(), os.getgid())


def test_an_unconnected_socket_has_no_peer_to_read() -> None:
    no_data = re.escape(os.strerror(errno.ENODATA))  # SO_PEERGROUPS: nobody connected
    lone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with lone, pytest.raises(OSError, match=no_data):
        read_peer_credentials(lone)


def test_user_names_and_numbers() -> None:
    assert user_name(0) == "root"
    with pytest.raises(KeyError):  # the test's premise: nobody has this uid here
        pwd.getpwuid(UNUSED_UID)
    assert user_name(UNUSED_UID) == str(UNUSED_UID)
    assert user_name(os.getuid()) == pwd.getpwuid(os.getuid()).pw_name


def test_group_ids_from_names_and_numbers() -> None:
    assert group_id("0") == 0
    assert group_id("990") == 990  # a number is taken as given, known here or not
    assert group_id(grp.getgrgid(os.getgid()).gr_name) == os.getgid()
    assert group_id("no-such-group-xyz") is None


# -- the agent's start ---------------------------------------------------------------------------


@pytest.fixture
def agent_args(tmp_path: Path) -> list[str]:
    """Arguments for an agent on a fake host, with a stand-in scx_layered that passes the check
    at start, and its data directory in tmp_path/data."""
    host = write_fake_kernel(tmp_path / "host")
    write_fake_sysfs(host, synthetic_shape(1, 2, 2, 1))
    scx = tmp_path / "scx_layered"
    scx.write_text(f"#!/bin/sh\necho '{' '.join((*SCHEDULER_FLAGS, ATTACH_WHEN_FREE))}'\nexit 0\n")
    scx.chmod(0o755)
    (tmp_path / "pods").mkdir()
    (tmp_path / "data").mkdir()
    return [
        "--pods-dir",
        str(tmp_path / "pods"),
        "--host-root",
        str(host),
        "--state-dir",
        str(tmp_path / "state"),
        "--data-dir",
        str(tmp_path / "data"),
        "--scx-layered",
        str(scx),
    ]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() configures the root logger; leave it as the test found it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"version": 9, "assignments": {}}',
        b'{"version":1,"assignments":{"a":"low"}}',
    ],
    ids=["json", "version", "key"],
)
def test_the_agent_will_not_start_on_a_damaged_assignments_file(
    tmp_path: Path, agent_args: list[str], content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "data" / ASSIGNMENTS_FILE
    path.write_bytes(content)
    assert main(agent_args) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"temper-agent: error: {path}: ")
    assert len(stderr.splitlines()) == 1
    assert "Traceback" not in stderr
    assert path.read_bytes() == content  # left as found, for the operator to look at


def test_a_leftover_partial_file_does_not_lend_its_mode(tmp_path: Path) -> None:
    store = AssignmentFile(tmp_path)
    leftover = tmp_path / ".assignments.json.partial"
    leftover.write_text("half")
    leftover.chmod(0o666)
    store.write({PodKey("shop", "a"): Tier.LOW})
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert not leftover.exists()


def test_a_peer_in_more_than_256_groups_is_read_whole() -> None:
    """CPython's getsockopt takes at most 1,024 bytes: the rest come from /proc."""
    script = (
        "import os, socket\n"
        "from temper.host.peercred import read_peer_credentials\n"
        "os.setgroups(list(range(1000, 1300)))\n"
        "a, b = socket.socketpair()\n"
        "print(len(read_peer_credentials(a).groups))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == 300


@pytest.mark.parametrize("text", ["²", "٣", "\uff11\uff12"])  # superscript, Arabic, fullwidth
def test_group_numbers_are_ascii_digits_only(text: str) -> None:
    assert group_id(text) is None  # no such group name here; never a ValueError
