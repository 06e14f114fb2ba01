"""Demo user sessions: actions in a believable order, with drop-outs, so the workflow panels have data.

Each tier keeps a few live sessions; every call advances one of them by an
action drawn from what usually follows the previous one (:data:`NEXT`), or
ends it (a drop-out, or after ``logout``). Sessions interleave, as real
users' do. :meth:`DemoSessions.happy_path` is one complete session per tier
walking every step of the demo funnels (``exporter.demo.credentials``), sent
first so that each funnel step has data from the start.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from exporter.catalog import TIERS

END = None  # the session ends (drop-out or after logout)
# What follows an action, with weights; END is where users drop out.
NEXT: dict[str, tuple[tuple[str | None, float], ...]] = {
    "login": (("upload", 5), ("search", 3), ("view", 2), (END, 1)),
    "upload": (("view", 6), ("upload", 2), ("annotate", 1), (END, 2)),
    "view": (("export", 3), ("share", 2), ("annotate", 2), ("search", 2), ("download", 2), (END, 2)),
    "search": (("view", 6), ("share", 2), (END, 2)),
    "annotate": (("view", 3), ("export", 2), ("share", 1), (END, 1)),
    "export": (("download", 3), ("view", 1), ("logout", 2), (END, 2)),
    "share": (("view", 2), ("logout", 2), (END, 2)),
    "download": (("view", 1), ("logout", 2), (END, 2)),
    "logout": ((END, 1),),
}
HAPPY_PATH = ("login", "upload", "view", "search", "share", "export", "logout")
LIVE_PER_TIER = 6


@dataclass
class DemoSession:
    id: str
    user: str
    last: str = "login"
    started: float = field(default_factory=time.monotonic)


class DemoSessions:
    """Live demo sessions per tier; ``advance`` gives the next request body of one of them."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.live: dict[str, list[DemoSession]] = {tier: [] for tier in TIERS}
        self._serial = 0

    def _new_id(self) -> str:
        self._serial += 1
        return f"demo-session-{self._serial}-{self.rng.getrandbits(64):016x}"

    def advance(self, tier: str, user: str) -> tuple[str, dict]:
        """``("/actions", body)`` for a session's next action, or ``("/sessions", body)`` for its end."""
        live = self.live[tier]
        if len(live) < LIVE_PER_TIER and (not live or self.rng.random() < 0.3):
            session = DemoSession(self._new_id(), user)
            live.append(session)
            return "/actions", {"user": session.user, "action": session.last, "session": session.id}
        session = self.rng.choice(live)
        choices, weights = zip(*NEXT[session.last])
        action = self.rng.choices(choices, weights)[0]
        if action is END:
            live.remove(session)
            return "/sessions", {"user": session.user, "duration": time.monotonic() - session.started,
                                 "session": session.id}
        session.last = action
        return "/actions", {"user": session.user, "action": action, "session": session.id}

    def happy_path(self, user: str) -> list[tuple[str, dict]]:
        """One whole session through every demo funnel step, then its end."""
        session_id = self._new_id()
        steps = [("/actions", {"user": user, "action": action, "session": session_id}) for action in HAPPY_PATH]
        return [*steps, ("/sessions", {"user": user, "duration": 60.0, "session": session_id})]
