"""URL inputs for the gateway: public hosts only, checked at every hop, capped in size.

A real loopback HTTP server stands in for the public internet; ``exempt`` names its
(ip, port) as allowed, so everything else on loopback stays refused as it would in production.
"""

from __future__ import annotations

import asyncio
import ipaddress
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from dotsocr.errors import DotsOCRError
from dotsocr.gateway.fetch import URLRefused, display_name, fetch_url, why_not_public

PDF = Path(__file__).parent / "data" / "multi_page.pdf"
BIG = 64 * 1024 * 1024  # far beyond any socket buffer, so an early close is seen by the server
CHUNK = b"x" * 65536


@dataclass
class Server:
    """A loopback server, the paths it was asked for and how each large body ended."""

    port: int
    paths: list[str] = field(default_factory=list)
    big: queue.Queue = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def exempt(self) -> frozenset[tuple[str, int]]:
        return frozenset({("127.0.0.1", self.port)})


def _handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.paths.append(self.path)
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            if parts.path.startswith("/files/"):
                self._send(200, PDF.read_bytes(), "application/pdf")
            elif parts.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", query["to"][0])
                self.end_headers()
            elif parts.path.startswith("/chain/"):
                left = int(parts.path.rsplit("/", 1)[1])
                if left == 0:
                    self._send(200, b"%PDF-1.4 end of chain", "application/pdf")
                    return
                self.send_response(302)
                self.send_header("Location", f"/chain/{left - 1}")
                self.end_headers()
            elif parts.path == "/big":
                self._send_big(with_length="length" in query)
            elif parts.path == "/hang":
                state.stop.wait(10)
            elif parts.path == "/gzip":
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", "4")
                self.end_headers()
                self.wfile.write(b"\x1f\x8b\x08\x00")
            else:
                self._send(404, b"not here", "text/plain")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_big(self, *, with_length: bool) -> None:
            written = 0
            try:
                self.send_response(200)
                if with_length:
                    self.send_header("Content-Length", str(BIG))
                self.end_headers()  # without a length the body runs until the close (HTTP/1.0)
                while written < BIG:
                    self.wfile.write(CHUNK)
                    written += len(CHUNK)
            except OSError:  # reset or broken pipe: the client hung up
                state.big.put(("closed early", written))
                return
            state.big.put(("complete", written))

    return Handler


@contextmanager
def _serve() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = Server(port=httpd.server_address[1])
    httpd.RequestHandlerClass = _handler(state)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def server() -> Iterator[Server]:
    """The stand-in for a public host: exempt in the tests that say so."""
    with _serve() as state:
        yield state


@pytest.fixture
def other() -> Iterator[Server]:
    """A second loopback server, never exempt: a redirect to it must not reach it."""
    with _serve() as state:
        yield state


def fetch(url: str, **kwargs: object) -> tuple[bytes, str]:
    kwargs.setdefault("max_bytes", 10_000_000)
    return asyncio.run(fetch_url(url, **kwargs))  # type: ignore[arg-type]


def refused(url: str, **kwargs: object) -> str:
    with pytest.raises(URLRefused) as info:
        fetch(url, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- forms and addresses refused before any connection --------------------------------------


def test_refused_addresses_never_reach_the_server(server: Server) -> None:
    port = server.port
    cases = {
        f"http://127.0.0.1:{port}/files/a.pdf": "loopback",
        f"http://localhost:{port}/files/a.pdf": "loopback",
        "http://10.0.0.1/doc.pdf": "private",
        "http://169.254.169.254/latest/meta-data/": "link-local",
        f"http://[::1]:{port}/files/a.pdf": "loopback",
        f"http://[::ffff:127.0.0.1]:{port}/files/a.pdf": "loopback",
        f"http://2130706433:{port}/files/a.pdf": "loopback",  # decimal 127.0.0.1
        f"http://0x7f.1:{port}/files/a.pdf": "loopback",  # hex and short form
        "http://100.64.0.1/doc.pdf": "CGNAT",
        "http://0.0.0.0/doc.pdf": "unspecified",
        "http://[::]/doc.pdf": "unspecified",
        "http://224.0.0.1/doc.pdf": "multicast",
        "http://[fd00::1]/doc.pdf": "private",
        "http://[fe80::1]/doc.pdf": "link-local",
        "http://[2002:7f00:1::]/doc.pdf": "6to4",
    }
    for url, why in cases.items():
        message = refused(url)
        assert why in message, (url, message)
        assert "public" in message
    assert server.paths == []


def test_octal_ip_is_refused(server: Server) -> None:
    """httpx rejects 0177.0.0.1 outright; getaddrinfo would have read it as 127.0.0.1."""
    refused(f"http://0177.0.0.1:{server.port}/files/a.pdf")
    assert server.paths == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.org/doc.pdf", "http and https"),
        ("file:///etc/passwd", "http and https"),
        ("gopher://example.org/", "http and https"),
        ("http://user:pw@example.org/doc.pdf", "credentials"),
        ("http://user@example.org/doc.pdf", "credentials"),
        ("http:///doc.pdf", "no host"),
        ("http://exa\nmple.org/", "not a valid URL"),
        ("http://example.org:port/", "not a valid URL"),
        ("http://example.org:99999/", "port 99999"),
        ("http://example.org:0/", "port 0"),
    ],
)
def test_refused_forms(url: str, why: str) -> None:
    assert why in refused(url)


def test_refused_is_a_dotsocr_error() -> None:
    assert issubclass(URLRefused, DotsOCRError)


def test_query_is_left_out_of_messages() -> None:
    message = refused("http://10.0.0.1/doc.pdf?signature=secret")
    assert "secret" not in message
    assert "http://10.0.0.1/doc.pdf" in message


# -- the address rule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",
        "224.0.0.251",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.0.8",
        "198.18.0.1",
        "::",
        "::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "::10.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::808:808",
        "2002:7f00:1::",
        "2002:a00:1::",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "2001:db8::1",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert why_not_public(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8",
     "64:ff9b::808:808"],
)  # fmt: skip
def test_public_addresses(address: str) -> None:
    assert why_not_public(ipaddress.ip_address(address)) is None


# -- fetching from an exempt server ---------------------------------------------------------


def test_fetches_a_pdf_byte_for_byte(server: Server) -> None:
    body, name = fetch(f"{server.base}/files/multi_page.pdf", exempt=server.exempt)
    assert body == PDF.read_bytes()
    assert name == "multi_page.pdf"


def test_exempt_names_the_port_too(server: Server) -> None:
    message = refused(
        f"{server.base}/files/multi_page.pdf", exempt=frozenset({("127.0.0.1", server.port + 1)})
    )
    assert "loopback" in message
    assert server.paths == []


def test_allow_private_turns_the_check_off(server: Server) -> None:
    body, _ = fetch(f"{server.base}/files/multi_page.pdf", allow_private=True)
    assert body == PDF.read_bytes()


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::1]/",
        "ftp://example.org/doc.pdf",
    ],
)
def test_redirect_to_a_refused_target_is_refused(server: Server, target: str) -> None:
    refused(f"{server.base}/redirect?to={target}", exempt=server.exempt)


def test_redirect_to_another_loopback_port_never_reaches_it(server: Server, other: Server) -> None:
    target = f"http://127.0.0.1:{other.port}/files/multi_page.pdf"
    message = refused(f"{server.base}/redirect?to={target}", exempt=server.exempt)
    assert "loopback" in message
    assert other.paths == []


def test_redirects_up_to_the_limit_are_followed(server: Server) -> None:
    body, name = fetch(f"{server.base}/chain/3", exempt=server.exempt, max_redirects=3)
    assert body == b"%PDF-1.4 end of chain"
    assert name == "0"


def test_a_longer_redirect_chain_is_refused(server: Server) -> None:
    message = refused(f"{server.base}/chain/4", exempt=server.exempt, max_redirects=3)
    assert "more than 3 redirects" in message
    assert "/chain/0" not in server.paths


def test_no_redirects_allowed(server: Server) -> None:
    assert "more than 0" in refused(f"{server.base}/chain/1", exempt=server.exempt, max_redirects=0)


def test_error_status_is_named(server: Server) -> None:
    message = refused(f"{server.base}/missing.pdf", exempt=server.exempt)
    assert "404" in message


@pytest.mark.parametrize("with_length", [True, False])
def test_body_over_the_cap_is_refused_and_the_download_stopped(
    server: Server, with_length: bool
) -> None:
    url = f"{server.base}/big" + ("?length=1" if with_length else "")
    message = refused(url, exempt=server.exempt, max_bytes=100_000)
    assert "100,000-byte limit" in message
    outcome, written = server.big.get(timeout=30)
    assert outcome == "closed early"
    assert written < BIG


def test_body_at_the_cap_is_accepted(server: Server) -> None:
    size = PDF.stat().st_size
    body, _ = fetch(f"{server.base}/files/multi_page.pdf", exempt=server.exempt, max_bytes=size)
    assert len(body) == size
    refused(f"{server.base}/files/multi_page.pdf", exempt=server.exempt, max_bytes=size - 1)


def test_compressed_body_is_refused(server: Server) -> None:
    assert "compressed" in refused(f"{server.base}/gzip", exempt=server.exempt)


def test_no_answer_in_time_is_refused(server: Server) -> None:
    message = refused(f"{server.base}/hang", exempt=server.exempt, timeout=0.5)
    assert "no answer" in message or "no complete answer" in message


def test_connection_refused_is_refused(server: Server) -> None:
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()  # nothing listens there now
    message = refused(f"http://127.0.0.1:{port}/doc.pdf", exempt=frozenset({("127.0.0.1", port)}))
    assert "could not connect" in message


# -- the connected address (DNS rebinding) --------------------------------------------------


class _Elsewhere(httpx.AsyncBaseTransport):
    """Sends every request to another port: as if DNS answered differently at connect time."""

    def __init__(self, port: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.port = port

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(port=self.port)
        return await self.inner.handle_async_request(request)


def test_connected_address_is_checked_again(server: Server) -> None:
    checked = server.port + 1 if server.port < 65535 else server.port - 1
    transport = _Elsewhere(server.port)

    async def go() -> None:
        try:
            await fetch_url(
                f"http://127.0.0.1:{checked}/files/multi_page.pdf",
                max_bytes=10_000_000,
                exempt=frozenset({("127.0.0.1", checked)}),
                transport=transport,
            )
        finally:
            await transport.inner.aclose()

    with pytest.raises(URLRefused, match=r"connection reached 127\.0\.0\.1"):
        asyncio.run(go())


def test_transport_without_network_stream_needs_allow_private() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"%PDF"))
    message = refused("http://93.184.216.34/a.pdf", transport=transport)
    assert "cannot be checked" in message
    body, name = fetch("http://docs.example/x/a.pdf", transport=transport, allow_private=True)
    assert (body, name) == (b"%PDF", "a.pdf")


def test_pinned_request_keeps_the_host_name() -> None:
    """The request goes to the checked IP, but Host and the TLS name stay the host's."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"%PDF")

    exempt = frozenset({("127.0.0.1", 8443), ("::1", 8443)})
    transport = httpx.MockTransport(answer)
    refused("https://localhost:8443/a.pdf", transport=transport, exempt=exempt)
    (request,) = seen
    assert request.url.host in ("127.0.0.1", "::1")
    assert request.headers["Host"] == "localhost:8443"
    assert request.extensions["sni_hostname"] == "localhost"


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("boom"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("bad")],
)
def test_httpx_errors_become_refusals(error: Exception) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise error

    transport = httpx.MockTransport(answer)
    refused("http://docs.example/a.pdf", transport=transport, allow_private=True)


# -- display names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("http://h/a/b/report.pdf", "report.pdf"),
        ("http://h/a/b/report.pdf?download=1#page=2", "report.pdf"),
        ("http://h/", "download"),
        ("http://h", "download"),
        ("http://h/dir/", "download"),
        ("http://h/dir/my%20file%20(1).pdf", "my_file_1_.pdf"),
        ("http://h/r%C3%A9sum%C3%A9.pdf", "r_sum_.pdf"),
        ("http://h/..%2F..%2Fetc%2Fpasswd", "etc_passwd"),
        ("http://h/a%5Cb%00c.png", "a_b_c.png"),
        ("http://h/.hidden", "hidden"),
        ("http://h/-rf", "rf"),
        ("http://h/%2E%2E", "download"),
    ],
)
def test_display_names_are_sanitised(url: str, name: str) -> None:
    assert display_name(url) == name


def test_long_display_names_keep_their_extension() -> None:
    name = display_name("http://h/" + "a" * 300 + ".pdf")
    assert len(name) == 100
    assert name.endswith(".pdf")
    assert len(display_name("http://h/" + "b" * 300)) == 100


def test_check_public_refuses_what_we_would_not_send_to():
    """Webhooks: the same rule, checked without fetching."""
    from dotsocr.gateway.fetch import check_public

    for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/", "ftp://example.com/"):
        with pytest.raises(URLRefused):
            asyncio.run(check_public(url))
    asyncio.run(check_public("http://127.0.0.1:9/hook", allow_private=True))  # trusted nets
