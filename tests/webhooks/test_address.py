"""Where a callback may point (RELIABILITY.md §4.2 / API-14): the address policy on its own."""

from __future__ import annotations

import ipaddress

import pytest

from app.webhooks import address
from app.webhooks.address import AddressRefused, check_syntax, forbidden_reason, resolve

FORBIDDEN = [
    "127.0.0.1",  # loopback
    "127.8.9.10",
    "10.1.2.3",  # RFC 1918
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # link-local: the cloud metadata address
    "100.64.0.1",  # CGNAT
    "0.0.0.0",  # unspecified
    "224.0.0.1",  # multicast
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",  # link-local
    "fc00::1",  # ULA
    "fd12:3456::1",
    "ff02::1",  # multicast
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("ip", FORBIDDEN)
def test_forbidden_addresses_have_a_reason(ip: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(ip)) is not None


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass(ip: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(ip)) is None


@pytest.mark.parametrize("ip", FORBIDDEN)
def test_literal_forbidden_urls_are_refused_unless_allowed(ip: str) -> None:
    host = f"[{ip}]" if ":" in ip else ip
    url = f"http://{host}:8080/hook"

    with pytest.raises(AddressRefused, match="MODELPRESS_WEBHOOK_ALLOW_PRIVATE"):
        resolve(url, allow_private=False)
    target = resolve(url, allow_private=True)

    assert target.address == ipaddress.ip_address(ip)


def test_a_name_resolving_to_loopback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(address, "getaddrinfo", lambda host, port: ["127.0.0.1"])

    with pytest.raises(AddressRefused, match=r"hooks\.example\.com resolves to 127\.0\.0\.1"):
        resolve("https://hooks.example.com/x", allow_private=False)


def test_one_private_address_among_public_ones_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(address, "getaddrinfo", lambda host, port: ["8.8.8.8", "10.0.0.1"])

    with pytest.raises(AddressRefused, match=r"10\.0\.0\.1"):
        resolve("https://hooks.example.com/x", allow_private=False)


def test_an_unresolvable_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def _fail(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    monkeypatch.setattr(address, "getaddrinfo", _fail)

    with pytest.raises(AddressRefused, match="does not resolve"):
        resolve("https://nowhere.example/x", allow_private=True)


def test_a_public_name_is_pinned_to_its_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(address, "getaddrinfo", lambda host, port: ["93.184.216.34"])

    target = resolve("https://Hooks.Example.com:8443/cb?x=1#frag", allow_private=False)

    assert target.pinned_url == "https://93.184.216.34:8443/cb?x=1"
    assert target.host == "hooks.example.com"
    assert target.host_header == "hooks.example.com:8443"


def test_default_port_is_left_out_of_the_host_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(address, "getaddrinfo", lambda host, port: ["2606:4700:4700::1111"])

    target = resolve("https://hooks.example.com", allow_private=False)

    assert target.host_header == "hooks.example.com"
    assert target.pinned_url == "https://[2606:4700:4700::1111]:443/"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "http://user:pw@example.com/",
        "http://example.com@127.0.0.1/",
        "http:///no-host",
        "http://example.com:99999/",
        "http://exa mple.com/",
        "http://example.com\\@127.0.0.1/",
        "https://example.com/" + "a" * 2100,
    ],
)
def test_malformed_urls_are_refused_before_any_lookup(url: str) -> None:
    with pytest.raises(AddressRefused):
        check_syntax(url)
