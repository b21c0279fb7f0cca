"""Keeping a server's view of its control state and the shared control state in step.

A :class:`~turnout.core.service.server.ModelServer` serves from its own view
(the registry's active versions, the router's configs, the fallbacks, the
rollout controller's history), as an informer serves from its cache. Every
change it makes takes effect in that view at once, between two awaits, and
is then written through the :class:`~turnout.core.state.control.ControlState`,
in order, by compare-and-set on the revision the view was last in step with.
A write based on a stale revision raises StateConflictError from the
server's next flush, and the view is refreshed from the shared state: the
other writer's change wins, and nothing is overwritten.

Changes other writers make reach the view through the change feed: the
active version, routing, fallback and rollout history are applied (those
that name versions this process has deployed); versions deployed elsewhere
stay in the catalogue, unserved here until their artifacts are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping, Set
from typing import Any

import anyio

from turnout.core.deployments.registry import Deployment
from turnout.core.errors import (
    ModelNotFoundError,
    StateConflictError,
    StateUnavailableError,
    TurnoutError,
)
from turnout.core.execution.metrics import MetricsTotals
from turnout.core.routing.outcomes import OutcomeTotals
from turnout.core.service.controller_lease import ControllerLease
from turnout.core.service.fleet_traffic import FleetTraffic, traffic_facts
from turnout.core.service.parts import ServerCalls, ServerParts
from turnout.core.state.control import EVERY_MODEL, ControlState, ModelState, VersionEntry
from turnout.core.state.pending import PendingWrites, stop_task
from turnout.core.state.repository_records import (
    deploy_keywords,
    deployment_options,
    fallback_to_dict,
)

__all__ = ["ControlSync", "deploy_options", "version_entry"]

logger = logging.getLogger("turnout")

# How often a server tells its fleet it lives (and is forgotten after 3 silent beats).
HEARTBEAT_SECONDS = 1.0
# Writes of a catalogue change, each on a fresher revision, before it gives up.
CATALOGUE_RETRIES = 5
# Seconds close waits for the queued writes (and the loads and reads they bring)
# before it gives up what is left, and says so.
CLOSE_WRITES_SECONDS = 30.0


def deploy_options(entry: VersionEntry) -> dict[str, Any]:
    """Return the ``deploy_model`` keywords that deploy a catalogued version as it was."""
    return deploy_keywords(entry.metadata, entry.options)


def version_entry(deployment: Deployment) -> VersionEntry:
    """Return the catalogue entry of a deployed version."""
    onnx = deployment.loaded.onnx_bytes
    return VersionEntry(
        version=deployment.version,
        digest="" if onnx is None else hashlib.sha256(onnx).hexdigest(),
        metadata=dict(deployment.metadata),
        options=deployment_options(deployment),
    )


class ControlSync:
    """Writes a server's control-state changes through the seam, and applies other writers'."""

    def __init__(self, parts: ServerParts, server: ServerCalls, state: ControlState) -> None:
        self.state = state
        self._registry = parts.registry
        self._router = parts.router
        self._rollouts = parts.rollouts
        self._fallbacks = parts.fallbacks
        self._server = server
        self._artifacts = parts.artifacts
        self._loading: set[tuple[str, str]] = set()
        self._unloadable: set[tuple[str, str]] = set()
        # Loads and retires run apart from the writes: each makes a change of its own,
        # which waits for the writes queued before it (catch_up).
        self._following = PendingWrites()
        # Per model: the shared state as last read or written (the revision the view
        # is in step with), versions retired here and not yet written, and whether a
        # write is queued. Entries are cached per deployment: hashing is not free.
        self._known: dict[str, ModelState] = {}
        self._retired: dict[str, set[str]] = {}
        self._queued: set[str] = set()
        self._unwritten: set[str] = set()  # changes an unreachable store refused
        # The controller lease, and the models whose next write it fences.
        self.lease = ControllerLease(state)
        self.fleet = FleetTraffic(self.lease.holder)
        self.announced: dict[str, Any] = {}  # facts the embedding application adds
        self._beating: asyncio.Task[None] | None = None
        self._controlling = False
        self._fenced: set[str] = set()
        # Per model with a write queued: True if it carries a choice (active, routing,
        # fallback, rollout), False if only versions deployed or retired here.
        self._chose: dict[str, bool] = {}
        self._entries: dict[tuple[str, str], tuple[Deployment, VersionEntry]] = {}
        self._lock = asyncio.Lock()
        self._tasks = PendingWrites()
        self._applying = False
        self.paused = False
        self.in_step = False  # start() has adopted the shared state
        self._unsubscribe: Callable[[], None] | None = None

    # -- writing this server's changes ---------------------------------------------------

    def changed(self, model_id: str, *, choice: bool = True) -> None:
        """Queue writing the model's state as this server now has it (a burst writes once).

        ``choice=False`` says the change is to the catalogue only (a version
        deployed here): written on a stale revision, it is written again on
        the fresh one, as it overrides nothing another writer chose. A choice
        (active version, routing, fallback) is not: its writer gets
        StateConflictError.
        """
        if self._applying or self.paused:
            return
        self._chose[model_id] = self._chose.get(model_id, False) or choice
        if self._controlling:
            self._fenced.add(model_id)
        if model_id not in self._queued:
            self._queued.add(model_id)
            self._tasks.spawn(self._write(model_id), f"writing the control state of {model_id}")

    def retired(self, model_id: str, version: str, *, choice: bool) -> None:
        """Note that ``version`` left the model here: the next write drops it from the catalogue."""
        self._retired.setdefault(model_id, set()).add(version)
        self._entries.pop((model_id, version), None)
        self.fleet.forget(model_id, version)
        self.changed(model_id, choice=choice)

    async def _write(self, model_id: str) -> None:
        async with self._lock:  # FIFO: writes land in the order they were queued
            self._queued.discard(model_id)
            chose = self._chose.pop(model_id, True)
            fence = None
            if model_id in self._fenced:
                self._fenced.discard(model_id)
                fence = self.lease.fence
            for _ in range(CATALOGUE_RETRIES):
                known = self._known.get(model_id) or ModelState(model_id)
                retired = set(self._retired.get(model_id, ()))
                intended = self.snapshot(model_id, known, retired, choices=chose)
                if intended == known and known.revision > 0:
                    return  # nothing this server holds differs from the stored state
                try:
                    written = await self.state.write(intended, fence=fence)
                except StateUnavailableError:
                    if fence is not None or chose:
                        self._undo_decision(model_id)
                    # Written again once the store is back (the feed says so): _refresh_all.
                    self._unwritten.add(model_id)
                    raise
                except StateConflictError as exc:
                    await self._refresh(model_id)
                    fresh = self._known.get(model_id) or ModelState(model_id)
                    # Choices another writer made the same way are no conflict: only the
                    # catalogue is left to write. Any other difference is the caller's to see.
                    if chose and not _same_choices(known, intended, fresh):
                        logger.warning("%s; this server now holds the stored state", exc)
                        # What only this server knows (versions deployed or retired here)
                        # is written on the fresh revision; the other writer's choices stand.
                        if self._catalogue_differs(model_id):
                            self.changed(model_id, choice=False)
                        raise
                    continue
                self._known[model_id] = written
                self._retired.get(model_id, set()).difference_update(retired)
                self._unwritten.discard(model_id)
                return
            raise StateConflictError(
                f"the catalogue of {model_id!r} changed under each of"
                f" {CATALOGUE_RETRIES} writes; try again",
                model_id=model_id,
                expected=known.revision,
                actual=(await self.state.read(model_id)).revision,
            )

    def _undo_decision(self, model_id: str) -> None:
        """Put the model's choices back as last stored: a choice or decision was not written.

        A choice (active version, routing, fallback) the store refused was
        refused to its caller too (503 state_unavailable): kept here, this
        server alone would serve by it, and write it once the store is back,
        a change made after all. A controller may decide (a canary step,
        promotion, rollback) in the second before its lease renewal finds the
        store unreachable. The decision counts only once stored under that
        lease: kept, it would be written after the outage unfenced, whoever
        leads by then, and dated inside it. Undone, the step is judged again
        once the store is back, by whoever leads then. The catalogue (versions
        deployed or retired here) is kept, and written once the store is back.
        """
        known = self._known.get(model_id)
        if known is not None and known.exists and self._registry.contains_model(model_id):
            logger.warning("%s: a change the control state did not take is undone", model_id)
            self._apply(known)

    def _catalogue_differs(self, model_id: str) -> bool:
        known = self._known.get(model_id) or ModelState(model_id)
        local = (
            set(self._registry.versions(model_id))
            if self._registry.contains_model(model_id)
            else set()
        )
        return bool(local - set(known.versions)) or bool(
            self._retired.get(model_id, set()) & set(known.versions)
        )

    def snapshot(
        self,
        model_id: str,
        known: ModelState,
        retired: Set[str] = frozenset(),
        *,
        choices: bool = True,
    ) -> ModelState:
        """Return the model's state as this server has it, based on ``known``'s revision.

        Without ``choices`` only the catalogue is this server's; the active
        version, routing, fallback and rollout stay as stored: this server's
        view of them may lag (a routing it could not apply yet, say), and a
        catalogue change must not write that view over another's choice.
        """
        versions = {v: e for v, e in known.versions.items() if v not in retired}
        if not choices and self._registry.contains_model(model_id):
            local = self._registry.versions(model_id)
            versions.update((version, self._entry(d)) for version, d in local.items())
            return known.changed(versions=versions)
        if not self._registry.contains_model(model_id):
            # Nothing of it is served here: what other writers deployed stays as they left it.
            if not versions:
                return ModelState(model_id, known.revision, history=known.history)
            fallback = known.fallback
            if fallback is not None and fallback.version not in (None, *versions):
                fallback = None
            active = known.active if known.active in versions else None
            return known.changed(versions=versions, active=active, fallback=fallback)
        local = self._registry.versions(model_id)
        versions.update((version, self._entry(d)) for version, d in local.items())
        return known.changed(
            versions=versions,
            active=self._registry.active.get(model_id),
            routing=self._router.config(model_id),
            fallback=self._fallbacks.get(model_id),
            step_started=self._rollouts.step_started(model_id),
            history=self._rollouts.history(model_id),
        )

    def _entry(self, deployment: Deployment) -> VersionEntry:
        key = (deployment.model_id, deployment.version)
        cached = self._entries.get(key)
        if cached is None or cached[0] is not deployment:
            cached = self._entries[key] = (deployment, version_entry(deployment))
        return cached[1]

    async def flush(self) -> None:
        """Wait for every queued write; raise the earliest failure (StateConflictError)."""
        await self._tasks.flush()

    # -- outcomes ---------------------------------------------------------------------

    async def add_outcome(
        self, model_id: str, version: str, value: float, *, once: str
    ) -> OutcomeTotals | None:
        """Add request ``once``'s outcome to the version's shared aggregates; return the new
        totals, or None if the request already has an outcome."""
        return await self.state.add_outcome(model_id, version, value, once=once)

    # -- other writers' changes ----------------------------------------------------------

    async def start(self) -> None:
        """Get in step with the shared state: adopt what it holds, write what only this view has.

        Called once the server has restored its repository; from then on the
        change feed brings every other writer's change. Returns once every
        version catalogued elsewhere is loaded here (or found unloadable), so a
        server that starts listening after it serves what the fleet routes to.
        """
        self.paused = False
        if self._unsubscribe is None:
            self._unsubscribe = await self.state.subscribe(self._heard)
        await self.lease.start()
        if self._beating is None:
            self._beating = asyncio.get_running_loop().create_task(self._beat())
        shared = set(await self.state.model_ids())
        for model_id in sorted(shared):
            await self._refresh(model_id)
        await self._following.settle()
        for model_id in self._registry.model_ids():
            if model_id not in shared:
                self.changed(model_id)
            elif self._catalogue_differs(model_id):
                self.changed(model_id, choice=False)
        await self.flush()
        self.in_step = True

    def _heard(self, model_id: str, revision: int) -> None:
        if model_id == EVERY_MODEL:
            self._tasks.spawn(self._refresh_everything(), "reading the whole control state")
            return
        known = self._known.get(model_id)
        if known is None or revision > known.revision:
            self._tasks.spawn(self._refresh_quietly(model_id), f"reading the state of {model_id}")

    async def _refresh_everything(self) -> None:
        try:
            stored = set(await self.state.model_ids())
        except TurnoutError as exc:
            logger.warning("cannot re-read the control state: %s", exc)
            return
        for model_id in sorted(stored | set(self._known) | set(self._registry.model_ids())):
            await self._refresh_quietly(model_id)
        for model_id in sorted(self._unwritten):
            self.changed(model_id)

    @property
    def available(self) -> bool:
        """False while a change made here waits for an unreachable store to be written."""
        return not self._unwritten

    async def _refresh_quietly(self, model_id: str) -> None:
        try:
            await self._refresh(model_id)
        except TurnoutError as exc:
            logger.warning("cannot apply the stored state of %s: %s", model_id, exc)

    async def catch_up(self, model_id: str) -> None:
        """Bring the view of the model in step with the shared state before a change to it.

        A change is then based on the newest revision, not on what the feed
        has delivered so far: only a write that races another gets
        StateConflictError. This server's own queued writes land first.
        """
        if self.paused:
            return
        await self._tasks.settle()
        await self._refresh(model_id)

    async def _refresh(self, model_id: str) -> None:
        """Read the model's shared state and apply it to this server's view."""
        state = await self.state.read(model_id)
        known = self._known.get(model_id)
        if known is not None and state.revision < known.revision:
            # The store went back (a Redis restarted without its data): what this server
            # serves is written again, on the revision the store is at.
            logger.warning(
                "the control state of %s went back from revision %d to %d; writing it again",
                model_id,
                known.revision,
                state.revision,
            )
            self._known[model_id] = state
            if self._registry.contains_model(model_id):
                self.changed(model_id)
            return
        if known is not None and state.revision <= known.revision:
            return
        self._known[model_id] = state
        if self._artifacts is not None and not self.paused:
            self._follow_catalogue(state, known)
        if state.exists and self._registry.contains_model(model_id):
            self._apply(state)

    # -- versions deployed or retired by other servers ----------------------------------------

    def catalogue(self, model_id: str) -> set[str]:
        """The model's versions: deployed here, or catalogued by any server sharing the state."""
        known = self._known.get(model_id)
        local = self._registry.versions(model_id) if self._registry.contains_model(model_id) else {}
        return set(local) | set(known.versions if known else ())

    def shared_versions(self, model_id: str) -> set[str] | None:
        """The model's versions in the shared catalogue as last read; None if never read."""
        known = self._known.get(model_id)
        return None if known is None else set(known.versions)

    def unloaded(self) -> list[str]:
        """``model:version`` of each catalogued version not loaded here (with artifacts)."""
        if self._artifacts is None:
            return []
        return sorted(
            f"{model_id}:{version}"
            for model_id, state in self._known.items()
            for version in state.versions
            if not self._registry.contains(model_id, version)
            and (model_id, version) not in self._unloadable
        )

    def _follow_catalogue(self, state: ModelState, before: ModelState | None) -> None:
        """Load the versions the catalogue gained elsewhere; retire those it lost."""
        model_id = state.model_id
        for version in state.versions:
            key = (model_id, version)
            if not self._registry.contains(model_id, version) and key not in self._loading:
                self._loading.add(key)
                loading = f"loading {model_id}:{version}"
                self._following.spawn(self._load(model_id, version), loading)
        gone = set(before.versions if before else ()) - set(state.versions)
        for version in sorted(gone):
            if self._registry.contains(model_id, version):
                self._following.spawn(
                    self._retire(model_id, version), f"retiring {model_id}:{version}"
                )

    async def _load(self, model_id: str, version: str) -> None:
        try:
            entry = self._known[model_id].versions.get(version)
            if entry is None or not entry.digest or self._artifacts is None:
                return
            onnx_bytes = await anyio.to_thread.run_sync(self._artifacts.get, entry.digest)
            await self._server.deploy_model(
                model_id, version, onnx_bytes, set_active=False, **deploy_options(entry)
            )
            logger.info("loaded %s:%s, deployed by another server", model_id, version)
        except TurnoutError as exc:
            logger.warning("cannot load %s:%s from the artifacts: %s", model_id, version, exc)
            self._unloadable.add((model_id, version))
        finally:
            self._loading.discard((model_id, version))
        known = self._known.get(model_id)
        if known is not None and known.exists:
            self._apply(known)  # routing may name the version just loaded

    async def _retire(self, model_id: str, version: str) -> None:
        try:
            await self._server.retire_model(model_id, version)
            logger.info("retired %s:%s, as another server did", model_id, version)
        except TurnoutError as exc:
            logger.warning("cannot retire %s:%s here: %s", model_id, version, exc)

    def _apply(self, state: ModelState) -> None:
        model_id, local = state.model_id, self._registry.versions(state.model_id)
        missing = sorted(set(state.versions) - set(local))
        if missing:
            logger.info("%s: %s deployed elsewhere, not served here", model_id, ", ".join(missing))
        self._applying = True
        try:
            active = state.active
            if (
                active is not None
                and active in local
                and active != self._registry.active.get(model_id)
            ):
                self._server._set_active(model_id, active)
            if state.routing != self._router.config(model_id):
                try:
                    self._router.build(state.routing, self._server._context(model_id))
                except TurnoutError as exc:
                    # Expected while a version it names is loading: applied once it is.
                    loading = any((model_id, v) in self._loading for v in state.versions)
                    log = logger.info if loading else logger.warning
                    log("%s: stored routing not applied here yet: %s", model_id, exc)
                else:
                    self._server._apply_routing(model_id, state.routing, "stored by another writer")
            if _fallback_data(state.fallback) != _fallback_data(self._fallbacks.get(model_id)):
                self._apply_fallback(model_id, state, local)
            self._rollouts.adopt_history(model_id, state.history)
            self._server._persist(model_id)  # to the repository; the seam write is skipped
        finally:
            self._applying = False

    def _apply_fallback(self, model_id: str, state: ModelState, local: Mapping[str, Any]) -> None:
        fallback = state.fallback
        if fallback is None:
            self._fallbacks.pop(model_id, None)
        elif fallback.version is None or fallback.version in local:
            self._fallbacks[model_id] = fallback

    # -- heartbeats -----------------------------------------------------------------------

    def facts(self) -> dict[str, Any]:
        """What this server tells its fleet each heartbeat: who it is, what it serves, how much."""
        traffic: dict[str, dict[str, MetricsTotals]] = {}
        for deployment in self._registry:
            totals = MetricsTotals.of(deployment.metrics)
            traffic.setdefault(deployment.model_id, {})[deployment.version] = totals
        return {
            **self.announced,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "leads": self.leads,
            "models": {
                model_id: {
                    "loaded": sorted(self._registry.versions(model_id)),
                    "revision": self._known[model_id].revision if model_id in self._known else 0,
                }
                for model_id in self._registry.model_ids()
            },
            "unloaded": self.unloaded(),
            "traffic": traffic_facts(traffic),
        }

    async def _beat(self) -> None:
        # Every server hears the others' traffic, not only the controller: one taking
        # over a canary judges its step window with the fleet's numbers in hand.
        while True:
            try:
                await self.state.heartbeat(self.lease.holder, self.facts(), 3 * HEARTBEAT_SECONDS)
                self.fleet.observe(await self.state.heartbeats())
                self._server._judge_rollouts()
                await self._learn_outcomes()
                if self.in_step:  # a writer taking over must know the fleet's catalogue
                    await self._server._tend_repository()
            except TurnoutError:
                pass  # an unreachable store: said once, where it is found
            except Exception:
                # Not fatal to the beat: a server that stops beating drops out of its fleet.
                logger.exception("a heartbeat of %s failed", self.lease.holder)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _learn_outcomes(self) -> None:
        """Hand each strategy that learns from outcomes (a bandit) the fleet's totals."""
        for model_id in self._registry.model_ids():
            with contextlib.suppress(ModelNotFoundError):  # retired a moment ago
                if hasattr(self._router.traffic(model_id).strategy, "adopt_outcomes"):
                    await self._server.refresh_outcomes(model_id)

    # -- the controller lease ---------------------------------------------------------------

    @property
    def leads(self) -> bool:
        """True if this server is the fleet's controller (see ControllerLease)."""
        return self.lease.leads

    @contextlib.contextmanager
    def as_controller(self) -> Iterator[None]:
        """Mark the changes made inside as the controller's: written fenced by its lease."""
        self._controlling = True
        try:
            yield
        finally:
            self._controlling = False

    async def close(self) -> None:
        """Stop beating, leading and hearing the change feed; wait for the queued writes.

        In bounded time whatever the background work is doing: the heartbeat
        and the lease's renewal are cancelled until they end (stop_task), and
        the writes, with the loads, retires and reads they bring, have
        CLOSE_WRITES_SECONDS. What is left then is given up (a flush waiting
        for it raises StateUnavailableError), and the log names it, as it
        names the models whose changes an unreachable store never took.
        Failures of the writes that ended were logged, or raised by a flush.
        """
        await self.lease.close()
        if self._beating is not None:
            await stop_task(self._beating, f"the heartbeat of {self.lease.holder}")
        # What other writers change no longer concerns this server; its own writes do.
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_WRITES_SECONDS
        # Until none is left: a write may queue another (its catalogue, on a fresh revision).
        while (left := [*self._following.tasks, *self._tasks.tasks]) and loop.time() < deadline:
            await asyncio.wait(left, timeout=deadline - loop.time())
        if left:
            given_up = [
                *await self._following.abandon(_closed_before("this version was loaded")),
                *await self._tasks.abandon(_closed_before("this change was written")),
            ]
            logger.error(
                "closing, gave up after %g s on %s: the control state may lack this"
                " server's last changes",
                CLOSE_WRITES_SECONDS,
                "; ".join(given_up),
            )
        if self._unwritten:
            logger.error(
                "closing with changes to %s that the control state, unreachable, never took:"
                " the servers sharing it do not have them",
                ", ".join(sorted(self._unwritten)),
            )


def _closed_before(what: str) -> Callable[[], StateUnavailableError]:
    return lambda: StateUnavailableError(f"the server closed before {what}")


def _same_choices(base: ModelState, intended: ModelState, fresh: ModelState) -> bool:
    """True if ``fresh`` already holds each choice ``intended`` changed from ``base``."""
    for read in (
        lambda state: state.active,
        lambda state: state.routing,
        lambda state: _fallback_data(state.fallback),
        lambda state: state.history,
    ):
        if read(intended) != read(base) and read(fresh) != read(intended):
            return False
    return True


def _fallback_data(fallback: Any) -> object:
    # Compared as plain data: a fallback value may be an array, whose == is elementwise.
    return fallback_to_dict(fallback)
