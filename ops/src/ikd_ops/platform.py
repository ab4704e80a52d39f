"""Where the platform's services listen and how the operator CLI talks to them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Endpoints:
    identity: str = field(
        default_factory=lambda: _env("IKD_IDENTITY_URL", "http://127.0.0.1:18000")
    )
    audit: str = field(default_factory=lambda: _env("IKD_AUDIT_URL", "http://127.0.0.1:18010"))
    gateways: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Endpoints:
        """Gateways of IKD_DEMO_AGENCIES on consecutive ports from IKD_GATEWAY_BASE_PORT."""
        agencies = _env(
            "IKD_DEMO_AGENCIES", "polres-cirebon bank-bjb dinsos-cirebon disnaker-cirebon"
        ).split()
        base = int(_env("IKD_GATEWAY_BASE_PORT", "18100"))
        return cls(gateways={a: f"http://127.0.0.1:{base + i}" for i, a in enumerate(agencies)})


class PlatformError(RuntimeError):
    pass


class Platform:
    """An HTTP client for the services, fetching client-credentials tokens as needed."""

    def __init__(
        self,
        endpoints: Endpoints,
        client_secret: str,
        timeout: float = 10.0,
        *,
        client_secrets: Mapping[str, str] | None = None,
    ) -> None:
        """`client_secret` for every client but those of `client_secrets` (onboarded ones)."""
        self.endpoints = endpoints
        self._secret = client_secret
        self._client_secrets = dict(client_secrets or {})
        self._http = httpx.Client(timeout=timeout)
        self._tokens: dict[str, str] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def token(self, client_id: str) -> str:
        if client_id not in self._tokens:
            response = self._http.post(
                f"{self.endpoints.identity}/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": self._client_secrets.get(client_id, self._secret),
                },
            )
            self._check(response)
            self._tokens[client_id] = str(response.json()["access_token"])
        return self._tokens[client_id]

    def call(
        self,
        method: str,
        url: str,
        *,
        client_id: str | None = None,
        expect: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if client_id is not None:
            headers["Authorization"] = f"Bearer {self.token(client_id)}"
        response = self._http.request(method, url, headers=headers, **kwargs)
        if response.status_code not in expect:
            self._check(response)
        return response

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.is_error:
            raise PlatformError(
                f"{response.request.method} {response.request.url} -> {response.status_code}: "
                f"{response.text[:300]}"
            )
