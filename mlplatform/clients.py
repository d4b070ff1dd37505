"""The address a request comes from, through the proxies the operator trusts.

``TRUSTED_PROXY_COUNT`` proxies in front of the app each append the address they received from
to ``CLIENT_IP_HEADER`` (``X-Forwarded-For`` style); the client is the entry that many places
from the right, the only one no client can forge. With none configured, the peer's address
(``REMOTE_ADDR``) is the client, and the forwarding headers are a client's words.
"""

import ipaddress

from django.conf import settings

# Headers that proxies add to say whom they forward for.
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def client_ip(request) -> str:
    """The client's address: ``REMOTE_ADDR``, or the trusted proxies' header when configured."""
    remote = request.META.get("REMOTE_ADDR") or "unknown"
    proxies = settings.TRUSTED_PROXY_COUNT
    if not proxies:
        return remote
    hops = [h.strip() for h in request.META.get(settings.CLIENT_IP_HEADER, "").split(",")]
    hops = [h for h in hops if h]
    if len(hops) < proxies:
        return remote
    candidate = hops[-proxies]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote


def forwarded_by_an_unknown_proxy(request) -> bool:
    """Whether the request says it was forwarded while no proxy is trusted: its peer's address
    is then a proxy's (on this host, a local address), not the client's."""
    if settings.TRUSTED_PROXY_COUNT:
        return False
    return any(name in request.META for name in (*FORWARDING_HEADERS, settings.CLIENT_IP_HEADER))
