"""RedisState: the control state in Redis, shared by every process and host that reaches it.

Keys, under a prefix (``turnout`` unless told)::

    {prefix}:state:{model_id}      hash: revision, body (the ModelState as JSON)
    {prefix}:models                set of the models that have a version
    {prefix}:outcomes:{model_id}   hash: {version}:count|shift|total|squares|non_binary
    {prefix}:outcome-id:{model_id}:{request_id}   a request id that got an outcome (a day)
    {prefix}:changes               pub/sub channel: "{model_id} {revision}" per write

A write is one Lua script, so the compare of the revision and the set of the
body are atomic in Redis; it publishes the change in the same script, so no
subscriber hears of a write that did not happen. Outcome totals are Redis
counters (``HINCRBY``, ``HINCRBYFLOAT``), never a read-modify-write from
Python; one script claims the request id (``SET NX EX``) and adds to them,
so an id takes one outcome in the whole fleet and a claimed id never lacks
its outcome. The shift (a version's first outcome) is set once with
``HSETNX``. A subscriber whose connection drops announces every model's
revision again once it is back (``EVERY_MODEL``), so a notification lost in
the gap costs a re-read, not a change (redis-py's ``PubSub``:
https://redis.readthedocs.io/en/stable/advanced_features.html#publish-subscribe).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from turnout.core.errors import InvalidConfigError, StateUnavailableError
from turnout.core.routing.outcomes import OutcomeTotals
from turnout.core.state.control import (
    EVERY_MODEL,
    OUTCOME_ID_SECONDS,
    ChangeListener,
    Fence,
    ModelState,
    fenced_out,
    stale_revision,
)
from turnout.core.state.control_codec import decode_state, encode_state
from turnout.core.state.pending import stop_task

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import RedisError
except ImportError:  # the redis extra is not installed
    aioredis = None  # type: ignore[assignment]
    RedisError = OSError  # type: ignore[assignment,misc]

__all__ = ["RedisState"]

logger = logging.getLogger("turnout")

# KEYS: state hash, models set, outcomes hash, channel, fencing lease. ARGV: expected
# revision, body, model id, present, fencing token ('' for none). Returns
# {1, new revision}, {0, stored revision}, or {2, 0} when fenced out.
_WRITE = """
if ARGV[5] ~= '' and redis.call('HGET', KEYS[5], 'token') ~= ARGV[5] then
  return {2, 0}
end
local stored = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
if stored ~= tonumber(ARGV[1]) then
  return {0, stored}
end
local revision = stored + 1
redis.call('HSET', KEYS[1], 'revision', revision, 'body', ARGV[2])
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[2], ARGV[3])
else
  redis.call('SREM', KEYS[2], ARGV[3])
  redis.call('DEL', KEYS[3])
end
redis.call('PUBLISH', KEYS[4], ARGV[3] .. ' ' .. revision)
return {1, revision}
"""

# KEYS: outcomes hash, the request id's key. ARGV: version, value, seconds the id is
# kept ('' for no id). Returns false if the id took an outcome already, else the
# version's count, shift, total, squares and non_binary (floats as strings: Redis
# would truncate a Lua number to an integer). The shift is set once, by whichever
# process records first; all then use it.
_ADD_OUTCOME = """
if ARGV[3] ~= '' and not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  return false
end
local prefix = ARGV[1] .. ':'
redis.call('HSETNX', KEYS[1], prefix .. 'shift', ARGV[2])
local shift = redis.call('HGET', KEYS[1], prefix .. 'shift')
local value = tonumber(ARGV[2])
local deviation = value - tonumber(shift)
local binary = (value == 0 or value == 1) and 0 or 1
return {
  redis.call('HINCRBY', KEYS[1], prefix .. 'count', 1),
  shift,
  redis.call('HINCRBYFLOAT', KEYS[1], prefix .. 'total', string.format('%.17g', deviation)),
  redis.call('HINCRBYFLOAT', KEYS[1], prefix .. 'squares',
    string.format('%.17g', deviation * deviation)),
  redis.call('HINCRBY', KEYS[1], prefix .. 'non_binary', binary),
}
"""

CONNECT_SECONDS = 0.5
CALL_SECONDS = 2.0
# Seconds a first subscription waits for Redis before it is refused.
SUBSCRIBE_TIMEOUT = 5.0
# KEYS: lease hash (expires with the lease), token counter. ARGV: holder, milliseconds.
_LEASE = """
local holder = redis.call('HGET', KEYS[1], 'holder')
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('HGET', KEYS[1], 'token'))
end
if holder then
  return false
end
local token = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'token', token)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return token
"""

# Seconds between attempts to get the change feed back after its connection dropped.
RESUBSCRIBE_DELAY = 0.5


class RedisState:
    """Control state in Redis: compare-and-set by a Lua script, changes over pub/sub."""

    def __init__(self, url: str, *, prefix: str = "turnout") -> None:
        if aioredis is None:
            raise InvalidConfigError(
                "a Redis control state needs redis-py: pip install 'turnout[redis]'"
            )
        self.url = url
        self._prefix = prefix
        # An unreachable Redis refuses a control write within about a second (two quick
        # retries, short timeouts), rather than holding the caller for redis-py's default.
        retry = Retry(ExponentialBackoff(cap=0.2, base=0.05), 2)
        try:
            self._redis = aioredis.Redis.from_url(
                url,
                retry=retry,
                socket_connect_timeout=CONNECT_SECONDS,
                socket_timeout=CALL_SECONDS,
            )
            # The feed's connection waits for messages as long as it takes: no read timeout;
            # health checks find a connection that died in silence.
            self._feed_redis = aioredis.Redis.from_url(
                url, retry=retry, socket_connect_timeout=CONNECT_SECONDS, health_check_interval=5
            )
        except ValueError as exc:  # redis-py's word for a malformed URL
            raise InvalidConfigError(f"not a Redis URL: {url!r}: {exc}") from exc
        self._write = self._redis.register_script(_WRITE)
        self._lease = self._redis.register_script(_LEASE)
        self._add_outcome = self._redis.register_script(_ADD_OUTCOME)
        self._listeners: list[ChangeListener] = []
        self._feed: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Event | None = None

    def _key(self, kind: str, model_id: str = "") -> str:
        return f"{self._prefix}:{kind}:{model_id}" if model_id else f"{self._prefix}:{kind}"

    async def read(self, model_id: str) -> ModelState:
        """Return the model's state; revision 0 and no versions if it was never written."""
        revision, body = await self._call(
            self._redis.hmget(self._key("state", model_id), "revision", "body")
        )
        if revision is None or body is None:
            return ModelState(model_id)
        return decode_state(model_id, int(revision), body)

    async def model_ids(self) -> list[str]:
        """Return every model that has a deployed version, sorted."""
        members = await self._call(self._redis.smembers(self._key("models")))
        return sorted(m.decode() for m in members)

    async def write(self, state: ModelState, *, fence: Fence | None = None) -> ModelState:
        """Store ``state`` if the model is still at ``state.revision``; return it at the next."""
        try:
            body = encode_state(state)
        except (TypeError, ValueError) as exc:
            raise InvalidConfigError(
                f"the state of {state.model_id!r} is not plain data: {exc}"
            ) from exc
        model_id = state.model_id
        keys = [
            self._key("state", model_id),
            self._key("models"),
            self._key("outcomes", model_id),
            self._key("changes"),
            self._key("lease", "" if fence is None else fence[0]),
        ]
        args: list[str | int] = [state.revision, body, model_id, "1" if state.exists else "0"]
        args.append("" if fence is None else str(fence[1]))
        written, revision = await self._call(self._write(keys=keys, args=args))
        if written == 2:
            assert fence is not None
            raise fenced_out(model_id, fence)
        if not written:
            raise stale_revision(state, int(revision))
        return state.changed(revision=int(revision))

    async def hold_lease(self, name: str, holder: str, seconds: float) -> int | None:
        """Take or renew lease ``name`` for ``holder``; return its token (None: held by another)."""
        keys = [self._key("lease", name), self._key("lease-token", name)]
        token = await self._call(self._lease(keys=keys, args=[holder, int(seconds * 1000)]))
        return None if token is None else int(token)

    async def add_outcome(
        self, model_id: str, version: str, value: float, *, once: str | None = None
    ) -> OutcomeTotals | None:
        """Add one outcome to the version's aggregates, atomically; return the new totals.

        None, and nothing added, if ``once`` already took an outcome.
        """
        keys = [
            self._key("outcomes", model_id),
            self._key("outcome-id", f"{model_id}:{once or ''}"),
        ]
        ttl = "" if once is None else str(int(OUTCOME_ID_SECONDS))
        added = await self._call(
            self._add_outcome(keys=keys, args=[version, repr(float(value)), ttl])
        )
        if not added:
            return None
        count, shift, total, squares, non_binary = added
        return OutcomeTotals(
            int(count), float(shift), float(total), float(squares), int(non_binary)
        )

    async def outcomes(self, model_id: str) -> dict[str, OutcomeTotals]:
        """Return the model's outcome aggregates per version."""
        fields: dict[bytes, bytes] = await self._call(
            self._redis.hgetall(self._key("outcomes", model_id))
        )
        by_version: dict[str, dict[str, str]] = {}
        for name, value in fields.items():
            version, _, field = name.decode().rpartition(":")
            by_version.setdefault(version, {})[field] = value.decode()
        return {
            version: OutcomeTotals(
                int(f.get("count", 0)),
                float(f.get("shift", 0.0)),
                float(f.get("total", 0.0)),
                float(f.get("squares", 0.0)),
                int(f.get("non_binary", 0)),
            )
            for version, f in by_version.items()
            if "count" in f
        }

    async def heartbeat(self, process: str, facts: Mapping[str, Any], seconds: float) -> None:
        """Say that ``process`` lives, with ``facts``, for the next ``seconds``."""
        now = time.time()
        body = json.dumps({"facts": {**facts, "at": now}, "until": now + seconds})
        await self._call(self._redis.hset(self._key("heartbeats"), process, body))

    async def heartbeats(self) -> dict[str, dict[str, Any]]:
        """Return each live process's last facts, with ``"at"``; forget the dead ones."""
        beats = await self._call(self._redis.hgetall(self._key("heartbeats")))
        now, live, dead = time.time(), {}, []
        for process, body in beats.items():
            beat = json.loads(body)
            if beat["until"] > now:
                live[process.decode()] = beat["facts"]
            else:
                dead.append(process)
        if dead:
            await self._call(self._redis.hdel(self._key("heartbeats"), *dead))
        return live

    async def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener(model_id, revision)`` after each write; return once subscribed."""
        self._listeners.append(listener)
        if self._feed is None:
            self._subscribed = asyncio.Event()
            self._feed = asyncio.get_running_loop().create_task(self._listen())
        assert self._subscribed is not None
        try:
            await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_TIMEOUT)
        except TimeoutError:
            self._listeners.remove(listener)
            raise StateUnavailableError(
                f"cannot subscribe to the control state at {self.url}"
            ) from None

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def _listen(self) -> None:
        channel = self._key("changes")
        lost = False
        while True:
            try:
                async with self._feed_redis.pubsub() as pubsub:
                    await pubsub.subscribe(channel)
                    assert self._subscribed is not None
                    self._subscribed.set()
                    if lost:
                        logger.info("the control-state feed from %s is back", self.url)
                        for listener in list(self._listeners):
                            listener(EVERY_MODEL, 0)
                        lost = False
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._announce(message["data"])
            except (RedisError, OSError) as exc:
                if not lost:
                    logger.warning("the control-state feed from %s is lost: %s", self.url, exc)
                    lost = True
                await asyncio.sleep(RESUBSCRIBE_DELAY)

    def _announce(self, data: bytes) -> None:
        model_id, _, revision = data.decode().partition(" ")
        for listener in list(self._listeners):
            listener(model_id, int(revision))

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise StateUnavailableError(
                f"the control state at {self.url} is unreachable: {exc}"
            ) from exc

    async def close(self) -> None:
        """Stop the change feed (cancelled until it ends) and close the connections."""
        self._listeners.clear()
        if self._feed is not None:
            await stop_task(self._feed, f"the control-state feed from {self.url}")
            self._feed = None
        await self._redis.aclose()
        await self._feed_redis.aclose()
