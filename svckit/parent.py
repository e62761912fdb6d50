"""Services started by a launcher stop when the launcher dies, so a killed `make run` or a
crashed test leaves no orphans. (`preexec_fn`/prctl would do it in the kernel, but running
Python between fork and exec deadlocks when the launcher has threads.)"""

from __future__ import annotations

import os
import signal
import threading
import time

ENV = "HEDGEROW_PARENT_PID"


def exit_with_parent(poll_s: float = 0.5) -> None:
    """If `HEDGEROW_PARENT_PID` names our parent, SIGTERM ourselves once it is gone (the
    service's own handler then shuts down gracefully). A daemon thread; no-op otherwise."""
    expected = os.environ.get(ENV, "")
    if not expected.isdigit() or int(expected) != os.getppid():
        return

    def watch() -> None:
        while os.getppid() == int(expected):
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
