"""Rate limit for repeated warnings about the same trouble."""

from __future__ import annotations

import time
from collections.abc import Callable


class LogLimiter:
    """Let one log line through per ``interval_s`` and count the ones held back."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._next: float | None = None
        self.suppressed = 0

    def allow(self) -> bool:
        """Return True when a line may be logged now; otherwise count it as suppressed."""
        now = self._clock()
        if self._next is not None and now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self.interval_s
        return True

    def take_suppressed(self) -> int:
        """Return and reset the number of lines held back since the last allowed one."""
        count, self.suppressed = self.suppressed, 0
        return count
