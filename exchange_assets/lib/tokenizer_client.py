"""HTTP client for the tokenizer's /v1/deidentify: object references in, de-identified out.

Transient faults (5xx, timeouts, connection refused) raise TransientTokenizerError, which the
asset's RetryPolicy retries with backoff. A 4xx means this client is wrong: it fails loudly.
"""

from __future__ import annotations

from typing import Any, Sequence

import httpx


class TransientTokenizerError(Exception):
    """The tokenizer is down or overloaded; retry later."""


class TokenizerClient:
    def __init__(self, base_url: str, service_token: str, *, timeout_s: float = 120.0) -> None:
        self._client = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {service_token}"},
            timeout=httpx.Timeout(timeout_s, connect=5.0),
        )

    def deidentify(self, items: Sequence[dict[str, str]]) -> tuple[str, list[dict[str, Any]]]:
        """[{object_key, sha256}] → (key_id, per-item results in the same order)."""
        try:
            response = self._client.post("/v1/deidentify", json={"items": list(items)})
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise TransientTokenizerError(f"tokenizer unreachable: {type(exc).__name__}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientTokenizerError(f"tokenizer answered {response.status_code}")
        if response.status_code != 200:
            raise RuntimeError(f"tokenizer refused the request: HTTP {response.status_code}")
        body = response.json()
        results = body["results"]
        if len(results) != len(items):
            raise RuntimeError("tokenizer returned a different number of results")
        return body["key_id"], results

    def close(self) -> None:
        self._client.close()
