"""Errors of the kernel lab tooling.

    LabError    the lab could not provision a kernel or run a guest: a host package that will
                not install, no Debian mirror in the apt configuration, no kernel that passes the
                config check, a download that fails, a guest that times out or never reports its
                exit status. The message says what failed; guest failures carry the console tail.

A job that runs and exits non-zero is not an error: its exit status comes back in the result.
Foreign exceptions (OSError, urllib's errors, lzma's) are re-raised as `LabError` with `from exc`.
"""

from __future__ import annotations


class LabError(Exception):
    """The lab could not provision its kernel or run a guest to completion."""
