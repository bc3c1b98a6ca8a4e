"""The host's side of ``main-thread-stuck`` (docs/hangs.md): is the main thread still in
the frame it was in? Stdlib only; runs in the host's heartbeat thread.

A busy loop in pure Python lets the heartbeat run (the GIL switches every 5 ms), so a
fresh heartbeat says nothing about the main thread. What gives such a loop away is a
main thread that never leaves its innermost frame while it burns CPU. This module
notes, in a ring word, when the frame it sees now first appeared; the watchdog reads
the main thread's CPU time and judges.
"""

from __future__ import annotations

import sys
import time

from . import _ring

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# When the main thread is seen in the same frame a beat apart while busy, it is looked
# at again every LOOK_STEP for up to LOOK_FOR before that is believed: one look a beat
# sees a loop that calls a function in its own frame about half the time.
LOOK_FOR = 0.2
LOOK_STEP = 0.002


class MainFrameWatch:
    """Publishes the main thread's ids once, then ``look()`` at every heartbeat."""

    def __init__(self, words: memoryview) -> None:
        self.words = words
        threading: Any = sys.modules.get("threading")
        if threading is None:  # rare (the host started no thread through it): 2.5 ms
            import threading
        main = threading.main_thread()
        self.ident: int = main.ident or 0
        try:  # taken while the main thread certainly lives; Linux, not macOS
            self.clock: int | None = time.pthread_getcpuclockid(self.ident)
        except (AttributeError, OSError):
            self.clock = None
        # Held, not just its id(): a frame freed and a new one allocated at the same
        # address would look like a thread that never left its frame. The cost: a frame
        # whose function returned keeps its locals until the next beat.
        self.frame: object = None
        self.cpu = (0.0, 0.0)  # (monotonic, main thread CPU seconds) at the last look
        # The watchdog reads the CPU time by the kernel's id and finds the main thread's
        # stack in faulthandler's output by the pthread id.
        words[_ring.W_MAIN_TID] = main.native_id or 0
        words[_ring.W_MAIN_IDENT] = self.ident

    def look(self, running: Callable[[], bool]) -> None:
        """Note whether the main thread's innermost frame changed since the last look."""
        current = sys._current_frames
        frame = current().get(self.ident)
        if frame is self.frame and self._busy():
            until = time.monotonic() + LOOK_FOR
            while frame is self.frame and running() and time.monotonic() < until:
                time.sleep(LOOK_STEP)
                frame = current().get(self.ident)
        if frame is not self.frame:
            self.frame = frame
            self.words[_ring.W_MAIN_FRAME_SINCE] = time.monotonic_ns()

    def forget(self) -> None:
        """Let the held frame (and its locals) go: the session ended, or this is a fork."""
        self.frame = None

    def _busy(self) -> bool:
        """Did the main thread use half a CPU since the last look? (A waiting one needs
        no second look: the watchdog will not call it stuck.) True when unknown."""
        if self.clock is None:
            return True
        try:
            cpu = time.clock_gettime(self.clock)
        except OSError:  # the main thread has ended
            return False
        now = time.monotonic()
        then, cpu_then = self.cpu
        self.cpu = (now, cpu)
        return cpu - cpu_then >= 0.5 * (now - then)
