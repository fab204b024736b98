"""The agent's log: every event one JSON line, `{"ts": ..., "event": ..., ...fields}`.

Mode transitions with their reasons, plans, scheduler exits, audited API calls and problems
all go through `log_event`, so one line format serves a person reading the log and a program
filtering it (the tests and the lab read it that way).
"""

from __future__ import annotations

import json
import logging
import time

from temper.agent.supervisor import Transition
from temper.policy.lifecycle import ChildExit

log = logging.getLogger("temper.agent")
EXIT_LINES = 15  # of a scheduler's last output, logged when it ends: its exit reason and dump head


def log_event(event: str, **fields: object) -> None:
    record = {"ts": round(time.time(), 3), "event": event, **fields}
    log.info(json.dumps(record))


def log_transition(transition: Transition) -> None:
    previous = transition.previous.value if transition.previous else None
    action = transition.action.value if transition.action else None
    log_event(
        "transition",
        mode=transition.mode.value,
        previous=previous,
        action=action,
        reason=transition.reason,
    )


def log_exit(exit_: ChildExit) -> None:
    tail = exit_.output_tail.strip().splitlines()[-EXIT_LINES:]
    log_event(
        "scheduler-exit",
        returncode=exit_.returncode,
        requested=exit_.requested,
        output="\n".join(tail),
    )
