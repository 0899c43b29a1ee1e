"""URL input against a real HTTP server on 127.0.0.1 (loopback only)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sam3_core.errors import ImageTooLargeError, UrlInputError
from sam3_core.protocol.url_fetch import (
    UrlPolicy,
    _resolve,
    address_refusal,
    fetch_image,
    host_allowed,
)

BODY = b"\x89PNG fake image bytes" * 10


class Handler(BaseHTTPRequestHandler):
    hosts_seen: list[str] = []
    credentials_seen: list[str | None] = []

    def do_GET(self):
        Handler.hosts_seen.append(self.headers.get("Host", ""))
        Handler.credentials_seen.append(self.headers.get("Authorization"))
        if self.path == "/image.png":
            self._send(200, BODY)
        elif self.path == "/big":
            self._send(200, b"x" * 5000)
        elif self.path == "/chunked-big":
            self.send_response(200)
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"y" * 1000)
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(10):
                time.sleep(0.3)
                self.wfile.write(b"z" * 10)
                self.wfile.flush()
        elif self.path.startswith("/redirect-to/"):
            self.send_response(302)
            self.send_header("Location", self.path[len("/redirect-to/") :])
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(301)
            self.send_header("Location", "/loop")
            self.end_headers()
        else:
            self._send(404, b"no")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # clients hanging up on over-long bodies is what the tests provoke


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def policy(**overrides) -> UrlPolicy:
    base = {"allowed_hosts": ("127.0.0.1", "localhost", "images.example"), "max_bytes": 2000}
    return UrlPolicy(**{**base, **overrides})


class TestRefusals:
    def test_loopback_is_refused_even_when_the_host_is_listed(self, server):
        with pytest.raises(UrlInputError, match="loopback"):
            fetch_image(f"http://{server}/image.png", policy())

    def test_names_are_checked_after_resolution(self, server):
        port = server.split(":")[1]
        with pytest.raises(UrlInputError, match=r"localhost resolves to .*loopback"):
            fetch_image(f"http://localhost:{port}/image.png", policy())

    def test_host_not_on_the_allow_list(self, server):
        with pytest.raises(UrlInputError, match="not in SAM3_URL_ALLOWED_HOSTS"):
            fetch_image(f"http://{server}/image.png", policy(allowed_hosts=("example.com",)))

    def test_empty_allow_list_allows_nothing(self, server):
        with pytest.raises(UrlInputError, match="not in SAM3_URL_ALLOWED_HOSTS"):
            fetch_image(f"http://{server}/image.png", policy(allowed_hosts=()))

    @pytest.mark.parametrize(
        "url",
        ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/", "http:///nohost"],
    )
    def test_only_http_urls_with_a_host(self, url):
        with pytest.raises(UrlInputError):
            fetch_image(url, policy(allow_private_networks=True))

    def test_credentials_in_url(self, server):
        with pytest.raises(UrlInputError, match="credentials"):
            fetch_image(f"http://user:pw@{server}/image.png", policy(allow_private_networks=True))

    @pytest.mark.parametrize(
        ("address", "reason"),
        [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private"),
            ("192.168.0.10", "private"),
            ("172.16.5.5", "private"),
            ("169.254.169.254", "metadata"),
            ("fd00:ec2::254", "metadata"),
            ("100.100.100.200", "metadata"),
            ("169.254.10.10", "link-local"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("100.64.0.1", "not a public"),
            ("0.0.0.0", "private"),
        ],
    )
    def test_address_classes(self, address, reason):
        refusal = address_refusal(ipaddress.ip_address(address), allow_private=False)
        assert refusal is not None and reason in refusal
        assert address_refusal(ipaddress.ip_address("93.184.216.34"), allow_private=False) is None

    def test_metadata_stays_refused_when_private_networks_are_allowed(self):
        refusal = address_refusal(ipaddress.ip_address("169.254.169.254"), allow_private=True)
        assert refusal and "metadata" in refusal
        assert address_refusal(ipaddress.ip_address("10.0.0.1"), allow_private=True) is None

    @pytest.mark.parametrize(
        "address",
        [
            "64:ff9b::a9fe:a9fe",  # NAT64, well-known prefix
            "64:ff9b::169.254.170.2",
            "64:ff9b:1:a9fe:a9:fe00::",  # NAT64 local-use, /48 layout
            "64:ff9b:1:a9:fe:a9fe::",  # NAT64 local-use, /56 layout
            "64:ff9b:1:0:a9:fea9:fe00:0",  # NAT64 local-use, /64 layout
            "64:ff9b:1::a9fe:aa17",  # NAT64 local-use, /96 layout (EKS Pod Identity)
            "::a9fe:a9fe",  # IPv4-compatible
            "::ffff:169.254.169.254",  # IPv4-mapped
            "2002:a9fe:a9fe::1",  # 6to4
            "2001:0:a9fe:a9fe:0:f227:3fff:fdd2",  # Teredo: server 169.254.169.254
            "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo: client 169.254.169.254
            "169.254.170.2",  # ECS task credentials
            "169.254.170.23",  # EKS Pod Identity
            "fd00:ec2::23",
        ],
    )
    @pytest.mark.parametrize("allow_private", [False, True])
    def test_credential_endpoints_in_any_form_are_refused(self, address, allow_private):
        refusal = address_refusal(ipaddress.ip_address(address), allow_private=allow_private)
        assert refusal is not None and "metadata or credential" in refusal, refusal

    @pytest.mark.parametrize(
        ("address", "reason"),
        [
            ("64:ff9b::7f00:1", "embeds 127.0.0.1, a loopback"),
            ("64:ff9b::10.0.0.1", "embeds 10.0.0.1, a private"),
            ("::7f00:1", "embeds 127.0.0.1"),
            ("2002:c0a8:0001::1", "embeds 192.168.0.1, a private"),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", "embeds 127.0.0.1"),
            ("64:ff9b:1::5db8:d822", "local-use NAT64"),
        ],
    )
    def test_embedded_ipv4_is_judged_as_itself(self, address, reason):
        refusal = address_refusal(ipaddress.ip_address(address), allow_private=False)
        assert refusal is not None and reason in refusal, refusal

    def test_public_ipv4_behind_nat64_and_6to4_is_allowed(self):
        for address in ("64:ff9b::5db8:d822", "2002:5db8:d822::1", "2606:4700::1111"):
            assert address_refusal(ipaddress.ip_address(address), allow_private=False) is None
        local_nat64 = ipaddress.ip_address("64:ff9b:1::5db8:d822")
        assert address_refusal(local_nat64, allow_private=True) is None

    def test_resolution_to_an_embedded_metadata_address_is_refused(self, monkeypatch):
        """Offline: name resolution is faked and refused before any connection."""
        answer = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("64:ff9b::a9fe:a9fe", 80, 0, 0))]
        monkeypatch.setattr(socket, "getaddrinfo", lambda *_, **__: answer)
        with pytest.raises(UrlInputError, match=r"embeds 169\.254\.169\.254"):
            _resolve("images.example.com", 80, policy(allow_private_networks=True))

    def test_host_patterns(self):
        allowed = ("example.com", "*.cdn.example.org")
        assert host_allowed("example.com", allowed)
        assert host_allowed("EXAMPLE.com.", allowed)
        assert not host_allowed("evil-example.com", allowed)
        assert not host_allowed("sub.example.com", allowed)
        assert host_allowed("a.cdn.example.org", allowed)
        assert not host_allowed("cdn.example.org", allowed)
        assert not host_allowed("a.cdn.example.org.evil.net", allowed)


class TestWhenExplicitlyAllowed:
    def test_fetches_from_an_allowed_private_host(self, server):
        data = fetch_image(f"http://{server}/image.png", policy(allow_private_networks=True))
        assert data == BODY

    def test_connects_to_the_checked_address_with_the_original_host(self, server, monkeypatch):
        port = int(server.split(":")[1])
        real = socket.getaddrinfo
        lookups = []

        def fake_getaddrinfo(host, *args, **kwargs):
            if host == "images.example":
                lookups.append(host)
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
            return real(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
        Handler.hosts_seen.clear()
        url = f"http://images.example:{port}/image.png"
        assert fetch_image(url, policy(allow_private_networks=True)) == BODY
        assert lookups == ["images.example"]  # resolved once, never again by the HTTP client
        assert Handler.hosts_seen == [f"images.example:{port}"]

    def test_credentials_go_to_the_first_origin_only(self, server):
        port = server.split(":")[1]
        allowed = policy(allow_private_networks=True)
        secret = {"Authorization": "Token s"}
        Handler.credentials_seen.clear()
        assert fetch_image(f"http://{server}/redirect-to//image.png", allowed, secret) == BODY
        assert Handler.credentials_seen == ["Token s", "Token s"]  # same origin
        Handler.credentials_seen.clear()
        other = f"http://localhost:{port}/image.png"  # same server, another origin
        assert fetch_image(f"http://{server}/redirect-to/{other}", allowed, secret) == BODY
        assert Handler.credentials_seen == ["Token s", None]

    def test_redirects_are_followed_and_each_hop_checked(self, server):
        allowed = policy(allow_private_networks=True)
        assert fetch_image(f"http://{server}/redirect-to//image.png", allowed) == BODY
        with pytest.raises(UrlInputError, match="not in SAM3_URL_ALLOWED_HOSTS"):
            fetch_image(f"http://{server}/redirect-to/http://example.net/a.png", allowed)
        with pytest.raises(UrlInputError, match="metadata"):
            fetch_image(
                f"http://{server}/redirect-to/http://169.254.169.254/latest/meta-data",
                policy(allow_private_networks=True, allowed_hosts=("127.0.0.1", "169.254.169.254")),
            )
        with pytest.raises(UrlInputError, match="redirects"):
            fetch_image(f"http://{server}/loop", allowed)

    def test_size_limits(self, server):
        allowed = policy(allow_private_networks=True)
        with pytest.raises(ImageTooLargeError, match="5000 bytes"):
            fetch_image(f"http://{server}/big", allowed)
        with pytest.raises(ImageTooLargeError, match="more than 2000"):
            fetch_image(f"http://{server}/chunked-big", allowed)

    def test_time_limit(self, server):
        # The server drips 100 bytes over 3 s, each write well within a read timeout.
        with pytest.raises(UrlInputError, match="time limit"):
            fetch_image(
                f"http://{server}/slow", policy(allow_private_networks=True, timeout_seconds=1)
            )

    def test_http_errors(self, server):
        with pytest.raises(UrlInputError, match="HTTP 404"):
            fetch_image(f"http://{server}/missing", policy(allow_private_networks=True))
