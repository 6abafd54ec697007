"""A small approximate-time synchroniser (message_filters is not available from PyPI).

Streams are named; the first is the *pivot* (the colour image). For each pivot message, in stamp
order, the synchroniser picks from every other stream the message nearest in time within
``tolerance`` seconds. Optional streams are matched when they have a message close enough and
otherwise left out (``None``) once it is clear none will come (the stream moved past, or it never
delivered anything). A pivot message is emitted as soon
as every required stream has its match; it is dropped (and counted) when a required stream has
moved past it without a match, or when the pivot queue overflows (the reason names the streams
it still waited for). Every queue holds at most ``queue_size`` messages (partners a few more, for
pivots that come late): the bound on the memory a stalled stream can pin. Thread-safe; no ROS imports.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Optional, Sequence

PARTNER_MARGIN = 8  # partner messages kept beyond queue_size: those of pivots still on their way


class ApproximateTimeSync:
    def __init__(self, streams: Sequence[str], callback: Callable[[dict[str, Any]], None],
                 tolerance: float = 0.02, queue_size: int = 5, optional: Sequence[str] = ()):
        if not streams:
            raise ValueError("need at least one stream")
        self.streams = list(streams)
        self.pivot = self.streams[0]
        self.optional = set(optional)
        if self.pivot in self.optional:
            raise ValueError("the pivot stream cannot be optional")
        self.callback = callback
        self._queues: dict[str, deque] = {s: deque() for s in self.streams}
        self._latest: dict[str, float] = {}
        self._lock = threading.Lock()
        self._set_limits(tolerance, queue_size)
        self.dropped = 0  # pivot messages that never found partners (or overflowed)
        self.dropped_reasons: dict[str, int] = {}
        self.matched = 0

    def add(self, stream: str, stamp: float, msg: Any) -> None:
        ready = []
        with self._lock:
            q = self._queues[stream]
            # Keep each queue sorted by stamp (out-of-order arrivals are rare but possible).
            if q and stamp < q[-1][0]:
                items = sorted(list(q) + [(stamp, msg)], key=lambda x: x[0])
                q.clear()
                q.extend(items)
            else:
                q.append((stamp, msg))
            self._latest[stream] = max(self._latest.get(stream, stamp), stamp)
            limit = self.queue_size if stream == self.pivot else self.queue_size + PARTNER_MARGIN
            while len(q) > limit:
                if stream == self.pivot:
                    self._drop(f"queue overflow waiting for {self._unmatched_names(q[0][0])}")
                q.popleft()
            ready = self._match()
        for group in ready:
            self.callback(group)

    def pending(self, stream: Optional[str] = None) -> int:
        with self._lock:
            return len(self._queues[stream or self.pivot])

    def drops(self) -> tuple[int, dict[str, int]]:
        """(pivot messages dropped so far, how many for each reason)."""
        with self._lock:
            return self.dropped, dict(self.dropped_reasons)

    def waiting_for(self) -> list[str]:
        """Required streams that have never delivered a message (e.g. a missing camera_info)."""
        with self._lock:
            return [s for s in self.streams if s not in self.optional and s not in self._latest]

    def clear(self) -> None:
        with self._lock:
            for q in self._queues.values():
                q.clear()

    def reconfigure(self, tolerance: float, queue_size: int) -> None:
        """New matching tolerance (s) and pivot queue size, for the messages still queued too."""
        with self._lock:
            self._set_limits(tolerance, queue_size)

    def _set_limits(self, tolerance: float, queue_size: int) -> None:
        if tolerance < 0:
            raise ValueError("tolerance must be >= 0")
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.tolerance = float(tolerance)
        self.queue_size = int(queue_size)
        self.stale_after = max(2.0, 20 * self.tolerance)  # s: partners older than a matched pivot by this are dropped

    # ------------------------------------------------------------------ internals
    def _unmatched_names(self, t: float) -> str:
        """The required streams without a message within tolerance of stamp ``t``."""
        names = [s for s in self.streams[1:] if s not in self.optional
                 and not any(abs(ts - t) <= self.tolerance for ts, _ in self._queues[s])]
        return ", ".join(names) if names else "a closer partner"

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        self.dropped_reasons[reason] = self.dropped_reasons.get(reason, 0) + 1

    def _match(self) -> list[dict[str, Any]]:
        out = []
        pq = self._queues[self.pivot]
        while pq:
            t, pmsg = pq[0]
            group = {self.pivot: pmsg}
            picks = {}
            decided = True
            failed = None
            for s in self.streams[1:]:
                q = self._queues[s]
                best = None
                for i, (ts, m) in enumerate(q):
                    if abs(ts - t) <= self.tolerance and (best is None or abs(ts - t) < abs(q[best][0] - t)):
                        best = i
                # A closer message may still arrive unless the stream has moved past t + tol.
                moved_past = self._latest.get(s, -float("inf")) > t + self.tolerance
                if best is not None and (moved_past or q[best][0] >= t):
                    picks[s] = best
                elif best is not None:
                    decided = False  # have a candidate, but a later one could be closer
                elif moved_past or (s in self.optional and s not in self._latest):
                    if s in self.optional:
                        picks[s] = None
                    else:
                        failed = s
                        break
                else:
                    decided = False
            if failed is not None:
                pq.popleft()
                self._drop(f"no {failed} within {self.tolerance:.3f} s")
                continue
            if not decided:
                # The pivot waits; but later pivots cannot be emitted before it either.
                break
            pq.popleft()
            for s, i in picks.items():
                q = self._queues[s]
                if i is None:
                    group[s] = None
                    continue
                group[s] = q[i][1]
                # Consume only the partner: a pivot that arrives late (a reliable retransmission)
                # still finds its own partners. Partners far older than this pivot are stale.
                del q[i]
                while q and q[0][0] < t - self.stale_after:
                    q.popleft()
            for s in self.streams[1:]:
                group.setdefault(s, None)
            self.matched += 1
            out.append(group)
        return out
