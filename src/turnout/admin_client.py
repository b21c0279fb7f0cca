"""A client of the admin API: deploy and inspect models on a running ``turnout serve``."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp

from turnout.core.errors import InvalidConfigError, RemoteError
from turnout.core.names import check_name

__all__ = ["AdminClient"]

DEFAULT_TIMEOUT = 300.0


class AdminClient:
    """Talk to a turnout admin API at ``url`` with a bearer ``token``; use it as a context."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT):
        if not url.startswith(("http://", "https://")):
            raise InvalidConfigError(f"the admin URL must start with http:// or https://: {url!r}")
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
        self._session_options: dict[str, Any] = {
            "headers": headers,
            "timeout": aiohttp.ClientTimeout(total=timeout),
        }
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminClient:
        self._session = aiohttp.ClientSession(**self._session_options)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request; return the JSON answer, or raise RemoteError with its code."""
        if self._session is None:
            raise InvalidConfigError("use the AdminClient in an 'async with' block")
        try:
            async with self._session.request(method, self.url + path, json=body) as response:
                try:
                    answer = await response.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    answer = None
                if response.status >= 400:
                    raise _remote_error(response.status, answer)
                return answer
        except aiohttp.ClientError as exc:
            raise RemoteError(
                f"cannot reach the admin API at {self.url}: {exc}", status=0, code="unreachable"
            ) from exc
        except TimeoutError as exc:
            raise RemoteError(
                f"the admin API at {self.url} did not answer within {self._timeout:g} s",
                status=0,
                code="timeout",
            ) from exc

    async def deploy(
        self, model_id: str, version: str, onnx_bytes: bytes, **options: Any
    ) -> dict[str, Any]:
        """Upload ONNX bytes as a version; ``options`` are deploy_model's (features, ...)."""
        # Checked here as the server would: a name is one URL segment, never a path.
        check_name("model_id", model_id)
        check_name("version", version)
        body = {"onnx": base64.b64encode(onnx_bytes).decode("ascii"), **options}
        answer: dict[str, Any] = await self.request(
            "POST", f"/admin/models/{model_id}/versions/{version}", body
        )
        return answer

    async def status(self) -> dict[str, Any]:
        """Return every model, its routing and its versions' status."""
        answer: dict[str, Any] = await self.request("GET", "/admin/status")
        return answer

    async def fleet(self) -> dict[str, Any]:
        """Return every live server sharing the control state: pid, leads, versions, revision."""
        answer: dict[str, Any] = await self.request("GET", "/admin/fleet")
        return answer


def _remote_error(status: int, answer: object) -> RemoteError:
    if isinstance(answer, Mapping) and isinstance(answer.get("error"), str):
        return RemoteError(answer["error"], status=status, code=str(answer.get("code", "")))
    return RemoteError(f"the admin API answered HTTP {status}", status=status, code="")
