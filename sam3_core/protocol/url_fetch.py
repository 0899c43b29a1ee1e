"""Fetching `{"type": "url"}` images without becoming an SSRF proxy.

Only http(s) URLs whose host is on the operator's allow-list are fetched. The host is
resolved once and every address it resolves to must be public (loopback, private,
link-local, shared, reserved and cloud-metadata addresses are refused); the connection then
goes to that checked address (no second lookup a DNS-rebinding attacker could answer
differently), with TLS verified against the host name; an IPv6 address is judged by every
IPv4 address it embeds as well (NAT64, IPv4-compatible and -mapped, 6to4, Teredo). Redirects
are followed by hand, each hop checked the same way. The body is read up to a byte limit
within a time limit.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3

from sam3_core.errors import ImageTooLargeError, UrlInputError

# Metadata and credential services stay unreachable even where private networks are allowed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # instance metadata: AWS, GCP, Azure, Oracle, DigitalOcean, ...
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud metadata
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.170.23",  # AWS EKS Pod Identity agent
        "fd00:ec2::23",  # AWS EKS Pod Identity agent over IPv6
    )
)
# IPv6 prefixes that carry an IPv4 address inside: NAT64 (RFC 6052's well-known prefix and
# RFC 8215's local-use one, whose operator picks the prefix length), IPv4-compatible.
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# Where RFC 6052 puts the IPv4 address's bytes for a prefix of 48, 56, 64 and 96 bits (byte 8,
# bits 64-71, is always zero).
_RFC6052_BYTES = ((6, 7, 9, 10), (7, 9, 10, 11), (9, 10, 11, 12), (12, 13, 14, 15))
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class UrlPolicy:
    """What URL input may reach (the ingress builds it from its settings)."""

    allowed_hosts: tuple[str, ...]
    allow_private_networks: bool = False
    max_bytes: int = 25 * 1024 * 1024
    timeout_seconds: float = 10.0
    max_redirects: int = 3


def host_allowed(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    """`example.com` allows that host only; `*.example.com` allows its subdomains."""
    host = host.lower().rstrip(".")
    for pattern in allowed_hosts:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an IPv6 address may reach or stand for: IPv4-mapped, IPv4-compatible,
    NAT64 (well-known and local-use prefixes; for the latter every place RFC 6052 allows),
    6to4 and Teredo (its server and client)."""
    definite, guessed = _embedded(address)
    return [*definite, *guessed]


def _embedded(
    address: ipaddress.IPv6Address,
) -> tuple[list[ipaddress.IPv4Address], list[ipaddress.IPv4Address]]:
    """The IPv4 addresses `address` embeds for certain, and those it may embed (a local-use
    NAT64 prefix's length is its operator's choice: one candidate per length)."""
    definite = []
    if address.ipv4_mapped is not None:
        definite.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        definite.append(address.sixtofour)
    if address.teredo is not None:
        definite.extend(address.teredo)
    packed = address.packed
    compatible = address in _IPV4_COMPATIBLE and int(address) > 1  # not :: or ::1
    if compatible or address in _NAT64_WELL_KNOWN:
        definite.append(ipaddress.IPv4Address(packed[12:]))
    guessed = []
    if address in _NAT64_LOCAL:
        guessed = [ipaddress.IPv4Address(bytes(packed[i] for i in at)) for at in _RFC6052_BYTES]
    return definite, guessed


def address_refusal(address: IPAddress, allow_private: bool) -> str | None:
    """Why URL input may not reach `address` (None: it may). An IPv6 address is refused when
    any IPv4 address it embeds would be."""
    if isinstance(address, ipaddress.IPv6Address):
        definite, guessed = _embedded(address)
        for inner in (*definite, *guessed):
            if inner in METADATA_ADDRESSES:
                return f"embeds {inner}, a cloud metadata or credential address"
        for inner in definite:
            refusal = _refusal(inner, allow_private)
            if refusal:
                return f"embeds {inner}, {refusal}"
        if guessed and not allow_private:
            return "a local-use NAT64 address (64:ff9b:1::/48), not a public one"
    return _refusal(address, allow_private)


def _refusal(address: IPAddress, allow_private: bool) -> str | None:
    if address in METADATA_ADDRESSES:
        return "a cloud metadata or credential address"
    if allow_private:
        return None if not (address.is_multicast or address.is_unspecified) else "not unicast"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a public address"
    return None


def _resolve(host: str, port: int, policy: UrlPolicy) -> IPAddress:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UrlInputError(f"cannot resolve {host}: {exc}") from exc
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise UrlInputError(f"{host} resolves to no address")
    for address in addresses:
        refusal = address_refusal(address, policy.allow_private_networks)
        if refusal:
            raise UrlInputError(f"{host} resolves to {address}, {refusal}: refused")
    return addresses[0]


def _open(
    url: str, policy: UrlPolicy, deadline: float, headers: Mapping[str, str]
) -> urllib3.BaseHTTPResponse:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UrlInputError(f"only http and https URLs are fetched, not {parts.scheme!r}")
    if parts.username or parts.password:
        raise UrlInputError("URLs with credentials are refused")
    host = parts.hostname
    if not host:
        raise UrlInputError("the URL has no host")
    if not host_allowed(host, policy.allowed_hosts):
        raise UrlInputError(f"host {host} is not in SAM3_URL_ALLOWED_HOSTS")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UrlInputError(f"bad port in URL: {exc}") from exc
    address = _resolve(host, port, policy)
    remaining = max(deadline - time.monotonic(), 0.01)
    timeout = urllib3.Timeout(connect=remaining, read=remaining)
    if parts.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            str(address),
            port,
            timeout=timeout,
            retries=False,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
        )
    else:
        pool = urllib3.HTTPConnectionPool(str(address), port, timeout=timeout, retries=False)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    try:
        return pool.urlopen(
            "GET",
            path,
            # Label Studio (Django REST framework) answers 406 to image/* alone.
            headers={**headers, "Host": host_header, "Accept": "image/*, */*;q=0.8"},
            redirect=False,
            preload_content=False,
            assert_same_host=False,
        )
    except urllib3.exceptions.HTTPError as exc:
        raise UrlInputError(f"cannot fetch {host}: {exc}") from exc


def fetch_image(url: str, policy: UrlPolicy, headers: Mapping[str, str] | None = None) -> bytes:
    """GET an image URL under `policy`; raises UrlInputError or ImageTooLargeError.
    `headers` (credentials of the image's server) go to the URL's own origin only, never
    to another origin a redirect points at."""
    deadline = time.monotonic() + policy.timeout_seconds
    origin = _origin(url)
    for _ in range(policy.max_redirects + 1):
        sent = (headers or {}) if _origin(url) == origin else {}
        response = _open(url, policy, deadline, sent)
        try:
            if response.status in _REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    raise UrlInputError(f"redirect {response.status} without a Location")
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise UrlInputError(f"the image URL answered HTTP {response.status}")
            return _read_limited(response, policy.max_bytes, deadline)
        finally:
            response.release_conn()
    raise UrlInputError(f"more than {policy.max_redirects} redirects")


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme, parts.hostname, port


def _read_limited(response: urllib3.BaseHTTPResponse, max_bytes: int, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ImageTooLargeError(f"the image URL sends {declared} bytes, the limit is {max_bytes}")
    body = bytearray()
    try:
        while chunk := response.read1(_CHUNK):  # returns as soon as any data arrives
            body += chunk
            if len(body) > max_bytes:
                raise ImageTooLargeError(f"the image URL sends more than {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise UrlInputError("the image URL took longer than the time limit")
    except urllib3.exceptions.HTTPError as exc:
        raise UrlInputError(f"reading the image URL failed: {exc}") from exc
    return bytes(body)
