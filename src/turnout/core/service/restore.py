"""Restoring a ModelServer from its model repository at start: versions, then each model's state.

A collaborator of :class:`~turnout.core.service.server.ModelServer`, like
:mod:`turnout.core.service.rollout_operations`: the state it fills (registry,
router, fallbacks, the store writer) is the server's, shared through
:class:`~turnout.core.service.parts.ServerParts`.
"""

from __future__ import annotations

import logging

from turnout.core.deployments.registry import Deployment
from turnout.core.errors import StoreError, TurnoutError
from turnout.core.routing.config import RoutingConfig
from turnout.core.routing.router import ACTIVE
from turnout.core.service.parts import ServerCalls, ServerParts
from turnout.core.state.repository import natural_key
from turnout.core.state.repository_records import ModelRecord, VersionRecord, restore_fallback

__all__ = ["Restorer"]

logger = logging.getLogger("turnout")


class Restorer:
    """Redeploys what a server's repository holds, and restores each model's state."""

    def __init__(self, parts: ServerParts, server: ServerCalls) -> None:
        self._registry = parts.registry
        self._router = parts.router
        self._fallbacks = parts.fallbacks
        self._store = parts.store
        self._server = server

    async def restore(self) -> None:
        """Restore the repository's versions and state (see ModelServer.restore)."""
        if self._store is None or self._store.enabled:
            return
        self._server._check_open()
        records = await self._store.load()
        found: list[tuple[Deployment, str]] = []
        try:
            for record in records:
                found.extend(await self._restore_model(record))
        finally:
            self._store.enabled = True
        if not self._store.read_only:
            await self._record_restored(records, found)

    async def _record_restored(
        self, records: list[ModelRecord], found: list[tuple[Deployment, str]]
    ) -> None:
        """Store what restore replaced, and the deployment.json of versions found bare."""
        assert self._store is not None
        for record in records:
            # What no longer fits was replaced; a model none of whose versions
            # could be restored is left on disk as it is, not deleted.
            if self._registry.contains_model(record.model_id):
                self._server._persist(record.model_id)
        for deployment, sha256 in found:
            self._store.record_found(deployment, sha256)
        try:
            await self._server._flush_changes()
        except StoreError as exc:
            # What was read serves; a read-only repository (a mounted volume) is no reason
            # to refuse to start. Changes made from now on fail when they are written.
            logger.warning("the restored models serve, but the repository is not written: %s", exc)

    async def _restore_model(self, record: ModelRecord) -> list[tuple[Deployment, str]]:
        """Restore one model; return its versions found without deployment.json."""
        found = []
        for version in record.versions:
            deployment = await self._restore_version(version)
            if deployment is not None and version.found:
                found.append((deployment, version.sha256))
        model_id = record.model_id
        if not self._registry.contains_model(model_id):
            return found
        active = self._restored_active(record)
        if active is not None:
            self._server._set_active(model_id, active)
        try:
            config = RoutingConfig.from_dict(record.routing)
            self._router.build(config, self._server._context(model_id))
        except TurnoutError as exc:
            logger.warning("stored routing of %s no longer fits (%s); using active", model_id, exc)
            config = ACTIVE
        self._server._apply_routing(model_id, config, "restored")
        fallback = restore_fallback(record, self._registry.versions(model_id))
        if fallback is not None:
            self._fallbacks[model_id] = fallback
        return found

    def _restored_active(self, record: ModelRecord) -> str | None:
        """The stored active version; the highest if there is no state or it is gone."""
        model_id, active = record.model_id, record.active
        highest = max(self._registry.versions(model_id), key=natural_key)
        if not record.stored:
            logger.info(
                "%s has no stored state; its highest version %s is active", model_id, highest
            )
            return highest
        if active is not None and not self._registry.contains(model_id, active):
            # Writes never name a version before it is stored, so this takes a version
            # that failed to load, or a hand edit: serving something beats serving nothing.
            logger.warning(
                "stored active version %s:%s is gone; its highest version %s is active instead",
                model_id,
                active,
                highest,
            )
            return highest
        return active

    async def _restore_version(self, record: VersionRecord) -> Deployment | None:
        if self._registry.contains(record.model_id, record.version):
            logger.warning(
                "%s:%s is deployed already; not restored", record.model_id, record.version
            )
            return None
        try:
            # Through the public method: a restored version is validated like a new one.
            deployment = await self._server.deploy_model(
                record.model_id,
                record.version,
                record.onnx_bytes,
                set_active=False,
                **record.options(),
            )
        except (TurnoutError, TypeError, ValueError) as exc:
            # A file in the repository never stops the server from starting.
            logger.warning("cannot restore %s:%s: %s", record.model_id, record.version, exc)
            return None
        record.restore_identity(deployment)
        return deployment
