"""Telling a client its job ended: POST the status to its URL, retrying with backoff.

A webhook makes the gateway an HTTP client on the user's behalf, like a URL input, so
its host must resolve to public addresses only (unless the operator allows private
ones). The submission is checked when it arrives (``fetch.check_public``); a job can end
hours later, so each attempt checks the addresses again and is sent to the one just
checked, so a second DNS answer cannot swap in an inside one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from dotsocr.config import GatewaySettings
from dotsocr.gateway.fetch import URLRefused, public_addresses

log = logging.getLogger("dotsocr.gateway")


async def pinned_address(url: str, allow_private: bool) -> str | None:
    """The checked IP address to call ``url`` at (None: call it as it is, private allowed).

    Raises:
        URLRefused: see ``fetch.public_addresses``.
    """
    _, addresses = await public_addresses(url, allow_private=allow_private)
    return str(addresses[0]) if addresses else None


async def deliver(url: str, body: dict[str, Any], settings: GatewaySettings) -> bool:
    """True once the receiver answered 2xx; gives up after the configured attempts."""
    delay = 1.0
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False, trust_env=False) as client:
        for attempt in range(1, settings.webhook_attempts + 1):
            try:
                response = await client.send(await _request(client, url, body, settings))
                if response.is_success:
                    return True
                problem = f"HTTP {response.status_code}"
            except URLRefused as exc:
                log.warning("webhook %s refused: %s", url, exc)
                return False
            except (httpx.HTTPError, OSError) as exc:
                problem = type(exc).__name__
            log.warning("webhook %s attempt %d: %s", url, attempt, problem)
            if attempt < settings.webhook_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
    return False


async def _request(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], settings: GatewaySettings
) -> httpx.Request:
    """The POST, pinned to an address checked just now (unless private ones are allowed)."""
    ip = await pinned_address(url, settings.allow_private_urls)
    target = httpx.URL(url)
    if ip is None:
        return client.build_request("POST", target, json=body)
    named = target.host != ip  # a name, not an IP literal: TLS must name it, not the IP
    extensions = {"sni_hostname": target.host} if target.scheme == "https" and named else {}
    return client.build_request(
        "POST",
        target.copy_with(host=ip),
        json=body,
        headers={"Host": target.netloc.decode("ascii")},
        extensions=extensions,
    )
