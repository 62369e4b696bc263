"""The delivery engine, split as Postfix's queue manager is: one part decides *when*
(scheduler: the lease window, renewals, timers), one *where* (routes: DNS answers as
they arrive), one *how* (dispatch: a batch through the transport), one *records*
(recorder: group commit and events); `Engine` wires them and runs the pump."""

from .engine import Engine, Suppressions

__all__ = ["Engine", "Suppressions"]
