"""SSRF guard: a callback URL is accepted only if every address its host resolves to is public."""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from mlplatform.conf import env

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWLIST_ENV = "WEBHOOK_ALLOWED_HOSTS"
DEFAULT_PORTS = {"http": 80, "https": 443}

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# NAT64 (RFC 6052) carries an IPv4 address in its last 32 bits.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class UnsafeURL(ValueError):
    """A callback URL that must not be called; the message names the problem."""


class UnresolvableHost(UnsafeURL):
    """The host has no address now; unlike the other refusals this one may pass later."""


@dataclass(frozen=True)
class ResolvedTarget:
    """Where to connect: the checked ``ip``, and the ``host`` to name in Host and TLS SNI."""

    scheme: str
    host: str
    port: int
    ip: str
    path_and_query: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def check_callback_url(url: str) -> ResolvedTarget:
    """Parse ``url``, resolve its host and refuse it unless every address is allowed."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeURL(f"The callback URL must use http or https, not {scheme or 'no scheme'!r}.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("The callback URL must not carry credentials (user:password@).")
    try:
        port = parts.port if parts.port is not None else DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise UnsafeURL(f"The callback URL has an invalid port: {exc}.") from None
    if port == 0:
        raise UnsafeURL("The callback URL has an invalid port: 0.")
    host = _ascii_host(parts.hostname or "")
    addresses = _resolve(host, port)
    allowed_names, allowed_networks = allowlist()
    if host.rstrip(".") not in allowed_names:
        for address in addresses:
            if any(address in network for network in allowed_networks):
                continue
            problem = address_problem(address)
            if problem:
                raise UnsafeURL(
                    f"The callback host {host!r} resolves to {address}, {problem}; "
                    f"only public addresses are allowed (operators may add it to {ALLOWLIST_ENV})."
                )
    path = parts.path or "/"
    return ResolvedTarget(
        scheme=scheme,
        host=host,
        port=port,
        ip=str(addresses[0]),
        path_and_query=f"{path}?{parts.query}" if parts.query else path,
    )


def address_problem(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = address_problem(embedded)
            return f"which embeds {embedded} ({inner})" if inner else None
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT, "a carrier-grade NAT"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a globally routable address"),
    )
    return next((problem for failed, problem in checks if failed), None)


def allowlist() -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """Host names and networks from ``WEBHOOK_ALLOWED_HOSTS``, read now (not at import)."""
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for item in env(ALLOWLIST_ENV):
        item = item.strip().lower()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
        except ValueError:
            names.add(item.rstrip("."))
    return frozenset(names), tuple(networks)


def _ascii_host(host: str) -> str:
    if not host:
        raise UnsafeURL("The callback URL has no host.")
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UnsafeURL(f"The callback host {host!r} is not a valid host name.") from None


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(f"The callback host {host!r} does not resolve: {exc}.") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # An IPv6 link-local answer may carry a zone ("fe80::1%eth0").
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvableHost(f"The callback host {host!r} has no address.")
    return addresses


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, 6to4, Teredo or NAT64 address reaches, if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client; the server is a public relay
    if any(address in network for network in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
