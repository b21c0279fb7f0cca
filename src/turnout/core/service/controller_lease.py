"""ControllerLease: which server of a fleet is its controller, by a lease in the control state.

The holder of the ``controller`` lease alone steps canaries, promotes, rolls
back and applies the health monitor's rollback; its writes carry the lease's
fencing token, which the store checks (``ControlState.write(fence=...)``).
The lease lasts ``LEASE_SECONDS`` and is renewed every third of that, so a
dead leader is replaced within two leases. An unreachable store makes nobody
the leader: nobody should act on what it cannot write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from turnout.core.errors import TurnoutError
from turnout.core.state.control import ControlState, Fence
from turnout.core.state.pending import stop_task

__all__ = ["CONTROLLER_LEASE", "LEASE_SECONDS", "ControllerLease"]

logger = logging.getLogger("turnout")

CONTROLLER_LEASE = "controller"
LEASE_SECONDS = 3.0


class ControllerLease:
    """Takes and renews one server's claim to lead its fleet; says whether it does."""

    def __init__(self, state: ControlState) -> None:
        self._state = state
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._token: int | None = None
        self._renewing: asyncio.Task[None] | None = None

    @property
    def leads(self) -> bool:
        """True if this server is the controller; one never started leads (it shares nothing)."""
        return self._renewing is None or self._token is not None

    @property
    def fence(self) -> Fence:
        """What this server's controller writes carry: the lease and the token it holds."""
        return (CONTROLLER_LEASE, self._token or 0)

    async def start(self) -> None:
        """Try for the lease now, so who leads is known before serving; then keep renewing."""
        if self._renewing is None:
            await self._renew()
            self._renewing = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            await self._renew()

    async def _renew(self) -> None:
        try:
            token = await self._state.hold_lease(CONTROLLER_LEASE, self.holder, LEASE_SECONDS)
        except TurnoutError:
            token = None
        if (token is None) != (self._token is None):
            if token is None:
                logger.info("this server no longer leads rollouts")
            else:
                logger.info("this server leads rollouts (lease token %d)", token)
        self._token = token

    async def close(self) -> None:
        """Stop renewing (cancelled until it ends): the lease lapses; another server takes it."""
        if self._renewing is not None:
            await stop_task(self._renewing, f"the controller lease renewal of {self.holder}")
