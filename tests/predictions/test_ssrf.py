"""The SSRF guard on callback URLs: only public addresses, unless an operator allows more."""

import ipaddress

import pytest

from predictions.webhooks.ssrf import (
    UnresolvableHost,
    UnsafeURL,
    address_problem,
    check_callback_url,
)


@pytest.fixture(autouse=True)
def _no_allowlist(monkeypatch):
    monkeypatch.delenv("WEBHOOK_ALLOWED_HOSTS", raising=False)


# Every spelling of an address that is not public, and the reason the guard gives.
NON_PUBLIC_URLS = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://localhost:8000/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "address"),
    ("http://192.0.2.1/", "address"),  # TEST-NET-1: documentation only
    ("http://[::ffff:127.0.0.1]/", "embeds 127.0.0.1 (a loopback address)"),
    ("http://[::ffff:10.0.0.1]/", "embeds 10.0.0.1 (a private address)"),
    ("http://[2002:7f00:1::]/", "embeds 127.0.0.1"),  # 6to4
    ("http://[2002:c0a8:101::]/", "embeds 192.168.1.1"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "embeds 127.0.0.1"),  # Teredo
    ("http://[64:ff9b::a9fe:a9fe]/", "embeds 169.254.169.254"),  # NAT64
    ("http://[::7f00:1]/", "reserved"),  # IPv4-compatible, deprecated
    ("http://2130706433/", "127.0.0.1, a loopback"),  # decimal
    ("http://0177.0.0.1/", "127.0.0.1, a loopback"),  # octal
    ("http://0x7f.1/", "127.0.0.1, a loopback"),  # hex, short form
    ("http://127.1/", "127.0.0.1, a loopback"),
    ("http://0/", "0.0.0.0, an unspecified"),
]


@pytest.mark.parametrize(("url", "problem"), NON_PUBLIC_URLS)
def test_if_any_address_is_not_public_then_refused_with_its_reason(url, problem):
    with pytest.raises(UnsafeURL) as refused:
        check_callback_url(url)

    assert problem in str(refused.value)
    assert "WEBHOOK_ALLOWED_HOSTS" in str(refused.value)
    assert not isinstance(refused.value, UnresolvableHost)


# URLs refused before any address is looked at.
UNUSABLE_URLS = [
    ("ftp://93.184.216.34/", "http or https, not 'ftp'"),
    ("file:///etc/passwd", "http or https, not 'file'"),
    ("gopher://93.184.216.34:70/", "http or https"),
    ("//93.184.216.34/", "not 'no scheme'"),
    ("http://user:secret@93.184.216.34/", "credentials"),
    ("http://user@93.184.216.34/", "credentials"),
    ("http:///nohost", "no host"),
    ("http://93.184.216.34:99999/", "invalid port"),
    ("http://93.184.216.34:0/", "invalid port"),
]


@pytest.mark.parametrize(("url", "problem"), UNUSABLE_URLS)
def test_if_the_url_itself_is_unusable_then_refused(url, problem):
    with pytest.raises(UnsafeURL) as refused:
        check_callback_url(url)

    assert problem in str(refused.value)


def test_if_the_host_does_not_resolve_then_refused_as_unresolvable():
    with pytest.raises(UnresolvableHost) as refused:
        check_callback_url("https://no-such-host.invalid/hook")

    assert "'no-such-host.invalid' does not resolve" in str(refused.value)
    assert isinstance(refused.value, UnsafeURL) and isinstance(refused.value, ValueError)


def test_public_addresses_are_accepted_and_resolved_once():
    target = check_callback_url("https://93.184.216.34/hooks/batch?tenant=7#ignored")

    assert target.scheme == "https"
    assert target.host == "93.184.216.34"
    assert target.ip == "93.184.216.34"
    assert target.port == 443
    assert target.path_and_query == "/hooks/batch?tenant=7"
    assert target.host_header == "93.184.216.34"


def test_public_ipv6_and_ports_are_kept():
    target = check_callback_url("HTTP://[2606:4700:4700::1111]:8080")

    assert (target.scheme, target.ip, target.port) == ("http", "2606:4700:4700::1111", 8080)
    assert target.path_and_query == "/"
    assert target.host_header == "[2606:4700:4700::1111]:8080"


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "::ffff:8.8.8.8", "2002:808:808::", "2606:4700::1"]
)
def test_public_addresses_have_no_problem(address):
    assert address_problem(ipaddress.ip_address(address)) is None


def test_allowlist_by_host_name_admits_that_name_only(monkeypatch):
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "hooks.internal, LOCALHOST.")

    target = check_callback_url("http://localhost:9000/hook")

    assert (target.host, target.ip, target.port) == ("localhost", "127.0.0.1", 9000)
    assert target.host_header == "localhost:9000"
    with pytest.raises(UnsafeURL, match="loopback"):
        check_callback_url("http://127.0.0.1:9000/hook")


def test_allowlist_by_ip_admits_that_address_whatever_its_spelling(monkeypatch):
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")

    assert check_callback_url("http://127.0.0.1/").ip == "127.0.0.1"
    assert check_callback_url("http://2130706433/").ip == "127.0.0.1"
    assert check_callback_url("http://localhost/").ip == "127.0.0.1"
    with pytest.raises(UnsafeURL, match="127.0.0.2"):
        check_callback_url("http://127.0.0.2/")


def test_allowlist_by_cidr_admits_the_network(monkeypatch):
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "10.20.0.0/16,fd00::/8")

    assert check_callback_url("http://10.20.3.4/").ip == "10.20.3.4"
    assert check_callback_url("http://[fd12::1]/").ip == "fd12::1"
    with pytest.raises(UnsafeURL, match="10.21.0.1"):
        check_callback_url("http://10.21.0.1/")


def test_allowlist_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "192.168.0.0/24")
    assert check_callback_url("http://192.168.0.10/").ip == "192.168.0.10"

    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "")

    with pytest.raises(UnsafeURL, match="private"):
        check_callback_url("http://192.168.0.10/")
