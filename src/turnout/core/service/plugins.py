"""Builds a server's plugin manager: built-ins, entry-point plugins, explicit plugins.

One manager per server, built by :func:`make_plugin_manager`, never at import
time, so two servers in one process (or one test after another) never share
plugins. Built-in strategies register exactly as third-party ones do.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import pluggy

from turnout.core import hookspecs
from turnout.core.errors import PluginError
from turnout.core.hookspecs import PROJECT_NAME
from turnout.core.resilience.breaker import BreakerPolicyFactory
from turnout.core.resilience.health import HealthCheck
from turnout.core.routing.config import RoutingStrategyFactory

__all__ = [
    "DEFAULT_PLUGINS",
    "EventEmitter",
    "collect_breaker_policies",
    "collect_health_checks",
    "collect_strategies",
    "make_plugin_manager",
]

logger = logging.getLogger("turnout.plugins")

DEFAULT_PLUGINS: tuple[str, ...] = (
    "turnout.strategies.active",
    "turnout.strategies.weighted",
    "turnout.strategies.sticky",
    "turnout.strategies.canary",
    "turnout.strategies.blue_green",
    "turnout.strategies.shadow",
    "turnout.strategies.bandit",
    "turnout.plugins.breaker_policies",
)


def make_plugin_manager(
    plugins: Iterable[object] = (), *, entry_points: bool = True
) -> pluggy.PluginManager:
    """Return a new plugin manager with the built-ins, entry-point plugins and ``plugins``.

    Entry-point plugins come from the ``turnout`` group of installed packages.
    A hook implementation that matches no hook fails here, at start-up.
    """
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        manager.register(importlib.import_module(name), name=name)
    try:
        # register() itself refuses an implementation of a known hook whose
        # arguments the spec lacks: that must be a PluginError too, not pluggy's.
        if entry_points:
            manager.load_setuptools_entrypoints(PROJECT_NAME)
        for plugin in plugins:
            manager.register(plugin)
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from exc
    return manager


def collect_strategies(manager: pluggy.PluginManager) -> Mapping[str, RoutingStrategyFactory]:
    """Return every registered routing strategy by name; a name registered twice is an error."""
    return _collect_named(manager, "register_routing_strategies", "routing strategy")


def collect_breaker_policies(manager: pluggy.PluginManager) -> Mapping[str, BreakerPolicyFactory]:
    """Return every registered breaker policy by name; a name registered twice is an error."""
    return _collect_named(manager, "register_breaker_policies", "breaker policy")


def collect_health_checks(manager: pluggy.PluginManager) -> Mapping[str, HealthCheck]:
    """Return every registered health check by name; a name registered twice is an error."""
    return _collect_named(manager, "register_health_checks", "health check")


def _collect_named(manager: pluggy.PluginManager, hook: str, kind: str) -> Mapping[str, Any]:
    found: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for impl in getattr(manager.hook, hook).get_hookimpls():
        offered: Iterable[Any] = impl.function() or ()
        for item in offered:
            name = getattr(item, "name", None)
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {impl.plugin_name!r} offers a {kind} with no name")
            if name in found:
                raise PluginError(
                    f"{kind} {name!r} is registered by both {owners[name]!r}"
                    f" and {impl.plugin_name!r}"
                )
            found[name] = item
            owners[name] = impl.plugin_name
    return MappingProxyType(found)


class EventEmitter:
    """Calls event hooks so that a failing plugin is logged and skipped, never fatal."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self._manager = manager
        self._listeners: dict[str, tuple[tuple[str, Callable[..., Any], tuple[str, ...]], ...]] = {}
        for name in hookspecs.all_hook_names():
            if name.startswith("register_"):
                continue
            impls = getattr(manager.hook, name).get_hookimpls()
            for impl in impls:
                if impl.hookwrapper or impl.wrapper:
                    raise PluginError(
                        f"plugin {impl.plugin_name!r}: event hook {name} cannot be a wrapper"
                    )
                if inspect.iscoroutinefunction(impl.function):
                    raise PluginError(
                        f"plugin {impl.plugin_name!r}: event hook {name} must be a plain"
                        " function; hand async work to your own task or queue"
                    )
            # pluggy calls the last registered first (tryfirst/trylast honoured):
            # get_hookimpls() lists them the other way round.
            self._listeners[name] = tuple(
                (impl.plugin_name, impl.function, tuple(impl.argnames)) for impl in reversed(impls)
            )

    def has_listeners(self, hook: str) -> bool:
        """True if any plugin implements ``hook``; lets callers skip building arguments."""
        return bool(self._listeners[hook])

    def emit(self, hook: str, /, **kwargs: Any) -> None:
        """Call every implementation of the event hook ``hook`` with ``kwargs``."""
        for plugin_name, function, argnames in self._listeners[hook]:
            try:
                # Like pluggy itself: an implementation takes only the arguments it names.
                function(**{name: kwargs[name] for name in argnames})
            except Exception:
                logger.exception("plugin %r failed in event hook %s", plugin_name, hook)
