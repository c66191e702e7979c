"""The edge's idea of the time: its wall clock, checked against the server's and watched for jumps.

A box without a real-time clock boots after a power cut with whatever time it last saved (or
1970) and later jumps when NTP, if any, catches up. The edge therefore:

- measures the offset to the server's clock (``GET /api/v1/health`` returns ``time_ms``) and
  adds it to the timestamps it assigns itself;
- watches the wall clock against the monotonic clock and, when the wall clock jumps, changes
  the offset by the same amount so that the time it assigns keeps running smoothly;
- until the first measurement of a run, tags the samples it stamps with the run's number (the
  buffer's session), and once the offset is known shifts exactly those samples by the error
  (``Buffer.correct``). Samples stamped by devices themselves are never shifted; the forwarder
  quarantines any sample far outside the server's time instead of sending it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from karkhana.core.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

JUMP_MS = 2_000
"""A wall clock that moves this much more or less than the monotonic clock has jumped."""
TOLERANCE_MS = 500
"""Offsets closer than this (or than half the round trip) to the current one are not applied,
so that network jitter does not make the edge's timestamps wobble."""


@dataclass(frozen=True, slots=True)
class Correction:
    """Samples stamped during ``epoch`` are ``delta_ms`` off; shift them by it."""

    epoch: int
    delta_ms: int


class EdgeClock:
    def __init__(
        self,
        session: int,
        wall: Clock = SYSTEM_CLOCK,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        jump_ms: int = JUMP_MS,
    ) -> None:
        """``session``: this run's number, the epoch of samples stamped before the first sync."""
        self.session = session
        self.wall = wall
        self.monotonic = monotonic
        self.jump_ms = jump_ms
        self.offset_ms = 0
        self.synced = False
        self.last_sync_ms: int | None = None
        self.jumps = 0
        self.last_jump_ms = 0
        self._ref_wall = wall.now_ms()
        self._ref_mono = monotonic()

    def now_ms(self) -> int:
        """The corrected time (server's time, as best known)."""
        self.check()
        return self.wall.now_ms() + self.offset_ms

    @property
    def epoch(self) -> int:
        """0 once checked against the server; else the session, to tag the samples stamped now."""
        return 0 if self.synced else self.session

    def check(self) -> int:
        """Detect a wall clock jump since the last look; returns its size (0: none)."""
        wall = self.wall.now_ms()
        mono = self.monotonic()
        jump = (wall - self._ref_wall) - round((mono - self._ref_mono) * 1000)
        self._ref_wall, self._ref_mono = wall, mono
        if abs(jump) < self.jump_ms:
            return 0
        self.offset_ms -= jump
        self.jumps += 1
        self.last_jump_ms = jump
        log.warning(
            "the edge's wall clock jumped by %+.1f s; its timestamps follow the %s",
            jump / 1000,
            "server's clock" if self.synced else "time before the jump until the server is reached",
        )
        return jump

    def observe_server(self, server_ms: int, rtt_s: float, local_wall_ms: int) -> Correction | None:
        """Take the server's time, read ``rtt_s`` round trip; ``local_wall_ms`` is the raw wall
        clock when the answer came. Returns the correction owed by the samples of this run
        stamped before the first check, once."""
        self.check()
        rtt_ms = round(rtt_s * 1000)
        measured = server_ms + rtt_ms // 2 - local_wall_ms
        error = measured - self.offset_ms
        if abs(error) > max(TOLERANCE_MS, rtt_ms):
            if self.synced:
                log.warning("edge clock off by %+d ms from the server's; corrected", error)
            self.offset_ms = measured
        else:
            error = 0
        self.last_sync_ms = server_ms
        if self.synced:
            return None
        self.synced = True
        if error:
            log.warning(
                "edge clock was %+.1f s off the server's; samples stamped since start are shifted",
                error / 1000,
            )
        return Correction(self.session, error)
