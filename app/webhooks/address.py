"""Where a `callback_url` may point (RELIABILITY.md §4.2, API7 SSRF).

`check_syntax` is the cheap part of the job spec (scheme, no userinfo, bounded length).
`resolve` runs at submit and again at every send: the host's addresses, every one of them public
unless the operator allows private ones (`MODELPRESS_WEBHOOK_ALLOW_PRIVATE`). The sender then
connects to the address it checked, never to a second lookup of the name (no DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

MAX_URL_LENGTH = 2048
SCHEMES = {"https": 443, "http": 80}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(ValueError):
    """The URL is malformed, its host does not resolve, or it resolves somewhere forbidden."""


@dataclass(frozen=True)
class Target:
    """A checked callback: what to connect to and what to tell the server it is."""

    scheme: str
    host: str  # the name (IDNA, lower case) or the IP literal, for Host and SNI
    port: int
    target: str  # path and query, at least "/"
    address: IPAddress  # the vetted address the sender connects to

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if SCHEMES[self.scheme] == self.port else f"{host}:{self.port}"

    @property
    def pinned_url(self) -> str:
        """The URL with the host replaced by the vetted address."""
        ip = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{self.scheme}://{ip}:{self.port}{self.target}"


def check_syntax(url: str) -> str:
    """The URL if its shape is acceptable, else AddressRefused (no lookup here)."""
    _split(url)
    return url


def _split(url: str) -> tuple[SplitResult, str, int]:
    if len(url) > MAX_URL_LENGTH:
        raise AddressRefused(f"at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or c in "\\\x7f" for c in url):
        raise AddressRefused("no whitespace, control characters or backslashes")
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise AddressRefused("the scheme must be https or http")
    if "@" in parts.netloc:
        raise AddressRefused("no user or password in the URL")
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError as exc:
        raise AddressRefused("an invalid port") from exc
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise AddressRefused("a host is required")
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise AddressRefused("an invalid host name") from exc
    return parts, host, port


def forbidden_reason(address: IPAddress) -> str | None:
    """Why no webhook may go to `address` by default (None: a public address)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = forbidden_reason(embedded)
            return f"{reason} (embedded in IPv6)" if reason else None
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local (cloud metadata)", address.is_link_local),
        ("multicast", address.is_multicast),
        ("carrier-grade NAT", address in _CGNAT),
        ("private", address.is_private),
        ("reserved", address.is_reserved or not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def getaddrinfo(host: str, port: int) -> list[str]:
    """The host's addresses (the tests replace this)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def resolve(url: str, allow_private: bool) -> Target:
    """The URL's target, pinned to its first address, once every address it has passes.

    Raises:
        AddressRefused: malformed, does not resolve, or resolves to a forbidden address.
    """
    parts, host, port = _split(url)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
        host = str(literal)
    else:
        try:
            found = getaddrinfo(host, port)
        except (OSError, UnicodeError) as exc:
            raise AddressRefused(f"the host {host} does not resolve") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(a.split("%")[0]) for a in found))
        if not addresses:
            raise AddressRefused(f"the host {host} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = forbidden_reason(address)
            if reason:
                raise AddressRefused(
                    f"{host} resolves to {address}, a {reason} address "
                    "(MODELPRESS_WEBHOOK_ALLOW_PRIVATE allows it)"
                )
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return Target(parts.scheme, host, port, target, addresses[0])
