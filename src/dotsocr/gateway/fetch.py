"""Fetching a user's document from a URL without letting the URL reach inside our network.

A URL input makes the gateway an HTTP client on the user's behalf, so each hop is checked:
http or https only, no credentials, and every address the host resolves to must be public
(unless the operator allows private ones). The connection is then pinned to an address we
checked, so a second DNS answer cannot swap in an inside address (rebinding), and the peer
actually reached is checked again before the body is read. Redirects are followed here, one
checked hop at a time, and the body is streamed against a byte cap.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from contextlib import aclosing
from urllib.parse import unquote

import httpx

from dotsocr import __version__
from dotsocr.errors import DotsOCRError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: IPv4 inside
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d
# Ranges the ipaddress module (3.11) still calls global, or that are worth naming.
_ALSO_REFUSED = (
    (ipaddress.IPv4Network("100.64.0.0/10"), "a shared (CGNAT) address"),
    (ipaddress.IPv4Network("192.0.0.0/24"), "an IETF protocol address"),
    (ipaddress.IPv6Network("64:ff9b:1::/48"), "a local-use NAT64 address"),
)
_HEADERS = {
    "User-Agent": f"dotsocr/{__version__}",
    "Accept": "application/pdf, image/*;q=0.9, */*;q=0.5",
    # A compressed body could inflate far past the cap inside one chunk, so ask for none.
    "Accept-Encoding": "identity",
}
_NAME_MAX = 100


class URLRefused(DotsOCRError):
    """A URL input was not fetched: its form, address, size, status or answer was refused."""


async def fetch_url(
    url: str,
    *,
    max_bytes: int,
    timeout: float = 30.0,
    max_redirects: int = 3,
    allow_private: bool = False,
    exempt: frozenset[tuple[str, int]] = frozenset(),
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[bytes, str]:
    """Download a document from a user-given URL, refusing anything but public hosts.

    Args:
        url: an http or https URL, without ``user:password@``.
        max_bytes: the largest body accepted; a larger one is refused without reading it all.
        timeout: seconds for the whole fetch, redirects and body included.
        max_redirects: redirects followed before giving up; each target is checked again.
        allow_private: skip the address checks (for operators fetching from their own network).
        exempt: ``(ip, port)`` pairs allowed although not public (tests use a loopback server).
        transport: an httpx transport to send through; the caller owns it and closes it. A
            transport that reports no ``network_stream`` can only be used with allow_private.

    Returns:
        The body, and a display name from the last path segment of the final URL
        (characters ``A-Za-z0-9._-`` only, at most 100, ``download`` when empty). It is a
        label, never a path.

    Raises:
        URLRefused: the URL, an address, a redirect, the status or the size was refused, or
            the server could not be reached or answered too slowly.

    Example:
        >>> body, name = await fetch_url("https://example.org/report.pdf", max_bytes=50_000_000)
    """
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(
                url, max_bytes, timeout, max_redirects, allow_private, exempt, transport
            )
    except TimeoutError as exc:
        raise URLRefused(
            f"{_shown(url)}: no complete answer within {timeout:g} s; "
            "try again later or upload the file instead"
        ) from exc


async def _fetch(
    url: str,
    max_bytes: int,
    timeout: float,
    max_redirects: int,
    allow_private: bool,
    exempt: frozenset[tuple[str, int]],
    transport: httpx.AsyncBaseTransport | None,
) -> tuple[bytes, str]:
    """Follow the checked hops and read the final body; the deadline is the caller's."""
    allowed = {(_plain_ip(ip), port) for ip, port in exempt}
    limit = max(max_redirects, 0)
    current = _parse(url)
    client = httpx.AsyncClient(
        transport=transport,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,  # a proxy from the environment would resolve names for us, unchecked
        headers=_HEADERS,
        # No reuse: a pooled TLS connection to one name must not carry a request for another.
        limits=httpx.Limits(max_keepalive_connections=0),
    )
    try:
        for hop in range(limit + 1):
            try:
                response = await _open(client, current, allow_private, allowed)
            except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
                raise _translate(exc, current, timeout) from exc
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    if hop == limit:
                        raise URLRefused(
                            f"Refused {_shown(url)}: more than {limit} redirects; "
                            "give the final URL instead"
                        )
                    current = _parse(location, base=current)
                    continue
                if not 200 <= response.status_code < 300:
                    raise URLRefused(
                        f"Refused {_shown(current)}: the server answered HTTP "
                        f"{response.status_code} {response.reason_phrase}; check the URL"
                    )
                try:
                    body = await _read_capped(response, current, max_bytes)
                except (httpx.HTTPError, httpx.StreamError) as exc:
                    raise _translate(exc, current, timeout) from exc
                return body, display_name(current)
            finally:
                await response.aclose()
        raise AssertionError("unreachable: the last hop returns or raises")
    finally:
        if transport is None:
            await client.aclose()


async def public_addresses(
    url: str, *, allow_private: bool = False
) -> tuple[httpx.URL, list[IPAddress]]:
    """The URL, parsed, and the addresses its host resolves to, every one of them public;
    for URLs we send to rather than read from, such as webhooks. With ``allow_private``
    nothing is resolved and the list is empty.

    Raises:
        URLRefused: a scheme, credentials or an address we would not fetch.
    """
    parsed = _parse(url)
    if allow_private:
        return parsed, []
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    addresses = await _resolve(host, port, parsed)
    for ip in addresses:
        where = f"{ip} is" if _is_ip(host) else f"{host} resolves to {ip},"
        _check_address(ip, port, parsed, set(), where)
    return parsed, addresses


async def check_public(url: str, *, allow_private: bool = False) -> None:
    """Refuse a URL we would not fetch (see ``public_addresses``)."""
    await public_addresses(url, allow_private=allow_private)


def _parse(url: str, *, base: httpx.URL | None = None) -> httpx.URL:
    """Parse one hop's URL and refuse forms we never fetch."""
    try:
        parsed = base.join(url) if base is not None else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise URLRefused(f"Refused {_shown(url)}: not a valid URL ({exc}); check it") from exc
    if parsed.scheme not in _DEFAULT_PORTS:
        raise URLRefused(
            f"Refused {_shown(parsed)}: only http and https URLs can be fetched; "
            "upload the file instead"
        )
    if parsed.userinfo:
        raise URLRefused(
            f"Refused {_shown(parsed)}: credentials in a URL (user:password@) are not "
            "accepted; use a URL that needs none, or upload the file"
        )
    if not parsed.raw_host:
        raise URLRefused(f"Refused {_shown(parsed)}: the URL names no host; check it")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise URLRefused(f"Refused {_shown(parsed)}: port {parsed.port} does not exist; check it")
    return parsed


async def _open(
    client: httpx.AsyncClient,
    url: httpx.URL,
    allow_private: bool,
    allowed: set[tuple[str, int]],
) -> httpx.Response:
    """Send the GET to a checked address of the host and check the peer it reached."""
    if allow_private:
        return await _send(client, url, url)
    host = url.raw_host.decode("ascii")
    port = url.port or _DEFAULT_PORTS[url.scheme]
    addresses = await _resolve(host, port, url)
    for ip in addresses:
        where = f"{ip} is" if _is_ip(host) else f"{host} resolves to {ip},"
        _check_address(ip, port, url, allowed, where)
    error: httpx.ConnectError | None = None
    for ip in addresses:  # nothing is sent until a connection succeeds, so try each in turn
        try:
            pinned = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            response = await _send(client, url, url.copy_with(host=str(pinned or ip)))
        except httpx.ConnectError as exc:
            error = exc
            continue
        try:
            _check_peer(response, url, allowed)
        except URLRefused:
            await response.aclose()
            raise
        return response
    assert error is not None  # getaddrinfo returns at least one address or raises
    raise error


async def _send(client: httpx.AsyncClient, url: httpx.URL, target: httpx.URL) -> httpx.Response:
    """GET ``target`` (``url`` with its host pinned to an IP) as if it were ``url``."""
    extensions = {}
    if url.scheme == "https" and not _is_ip(url.raw_host.decode("ascii")):
        extensions["sni_hostname"] = url.raw_host.decode("ascii")  # and the certificate name
    request = client.build_request(
        "GET", target, headers={"Host": url.netloc.decode("ascii")}, extensions=extensions
    )
    return await client.send(request, stream=True)


async def _resolve(host: str, port: int, url: httpx.URL) -> list[IPAddress]:
    """Every address the host resolves to, in the resolver's order, without repeats."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise URLRefused(
            f"Refused {_shown(url)}: cannot resolve {host!r} ({exc}); check the host name"
        ) from exc
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(_plain_ip(str(sockaddr[0])))
        if ip not in found:
            found.append(ip)
    return found


def _check_peer(response: httpx.Response, url: httpx.URL, allowed: set[tuple[str, int]]) -> None:
    """Refuse when the connection reached an address the rule refuses (DNS rebinding)."""
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if not peer:
        raise URLRefused(
            f"Refused {_shown(url)}: the transport does not say which address it reached, so "
            "it cannot be checked; use the default transport or allow private addresses"
        )
    ip = ipaddress.ip_address(_plain_ip(str(peer[0])))
    _check_address(ip, int(peer[1]), url, allowed, f"the connection reached {ip},")


def _check_address(
    ip: IPAddress, port: int, url: httpx.URL, allowed: set[tuple[str, int]], where: str
) -> None:
    """Refuse a non-public address unless the operator exempted that (ip, port)."""
    if (str(ip), port) in allowed:
        return
    why = why_not_public(ip)
    if why is not None:
        raise URLRefused(
            f"Refused {_shown(url)}: {where} {why}; only public hosts can be fetched, "
            "so upload the file instead"
        )


def why_not_public(ip: IPAddress) -> str | None:
    """Say what kind of non-public address ``ip`` is, or None when it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        for inner, form in _embedded_ipv4(ip):
            why = why_not_public(inner)
            if why is not None:
                return f"{why} inside {form}"
        if ip.ipv4_mapped is not None or ip in _NAT64:
            return None  # packets go to the embedded IPv4 address, which is public
    kinds = (
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "a site-local address"),
    )
    for flag, why in kinds:
        if flag:
            return why
    for network, why in _ALSO_REFUSED:
        if ip.version == network.version and ip in network:
            return why
    return None if ip.is_global else "not a global address"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[ipaddress.IPv4Address, str]]:
    """The IPv4 addresses an IPv6 address carries, each with the name of its form."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append((ip.ipv4_mapped, "an IPv4-mapped address"))
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are judged as themselves
        found.append((ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "an IPv4-compatible address"))
    if ip in _NAT64:
        found.append((ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "a NAT64 address"))
    if ip.sixtofour is not None:
        found.append((ip.sixtofour, "a 6to4 address"))
    if ip.teredo is not None:
        found.extend((inner, "a Teredo address") for inner in ip.teredo)
    return found


async def _read_capped(response: httpx.Response, url: httpx.URL, max_bytes: int) -> bytes:
    """Read the body as it arrives, stopping as soon as it passes ``max_bytes``."""
    too_large = (
        f"Refused {_shown(url)}: the document is larger than the {max_bytes:,}-byte limit; "
        "upload a smaller file"
    )
    length = response.headers.get("content-length", "").strip()
    if length.isdigit() and int(length) > max_bytes:
        raise URLRefused(too_large)
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise URLRefused(
            f"Refused {_shown(url)}: the server sent a compressed body ({encoding}) though "
            "none was asked for; upload the file instead"
        )
    body = bytearray()
    async with aclosing(response.aiter_bytes()) as chunks:
        async for chunk in chunks:
            body += chunk
            if len(body) > max_bytes:
                raise URLRefused(too_large)
    return bytes(body)


def _translate(exc: Exception, url: httpx.URL, timeout: float) -> URLRefused:
    """One-line URLRefused for an httpx failure, so no httpx exception leaves this module."""
    if isinstance(exc, httpx.TimeoutException):
        return URLRefused(
            f"{_shown(url)}: no answer within {timeout:g} s; "
            "try again later or upload the file instead"
        )
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return URLRefused(
            f"{_shown(url)}: could not connect ({detail}); check the URL or upload the file"
        )
    return URLRefused(
        f"{_shown(url)}: the download failed ({detail}); try again or upload the file instead"
    )


def display_name(url: httpx.URL | str) -> str:
    """A label for the document from the URL's last path segment; never a path."""
    raw_path = httpx.URL(url).raw_path if isinstance(url, str) else url.raw_path
    segment = unquote(raw_path.split(b"?", 1)[0].rsplit(b"/", 1)[-1].decode("ascii", "replace"))
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", segment).strip("._-")
    if len(name) > _NAME_MAX:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 10:  # keep a short extension: it hints at the type
            name = stem[: _NAME_MAX - len(ext) - 1].rstrip("._-") + "." + ext
        else:
            name = name[:_NAME_MAX].rstrip("._-")
    return name or "download"


def _shown(url: httpx.URL | str) -> str:
    """The URL for a message: no query or fragment (they may hold tokens), one short line."""
    text = str(url.copy_with(query=None, fragment=None)) if isinstance(url, httpx.URL) else url
    text = text.split("?", 1)[0].split("#", 1)[0]
    text = text if text.isprintable() else ascii(text)[1:-1]
    return text if len(text) <= 200 else text[:197] + "..."


def _plain_ip(text: str) -> str:
    """An address in canonical form, without an IPv6 scope (``fe80::1%eth0``)."""
    text = text.split("%", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _is_ip(host: str) -> bool:
    """True for an IP literal, which needs no SNI name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
