"""What the subprocess peers share: ending a server process politely, then firmly."""

from __future__ import annotations

import signal
import subprocess

#: How long a peer gets to start or to stop before the test gives up on it.
STARTUP_TIMEOUT = 10.0


def end_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, a wait, then SIGKILL if it is still there; nothing if it already ended."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STARTUP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
