"""Which addresses a crawler may connect to: IANA's special-purpose address registries for both families.

Python's ``ipaddress.is_global`` is not enough: it says True for IPv6 forms that carry an IPv4 address inside
(NAT64 ``64:ff9b::a9fe:a9fe`` is the metadata service, 6to4 ``2002:7f00:1::`` is loopback, ``::127.0.0.1``,
``::ffff:0:7f00:1``) and for deprecated site-local ``fec0::/10``. Here:

* an address that embeds an IPv4 address (IPv4-mapped, IPv4-compatible, IPv4-translated, well-known NAT64,
  6to4) is judged by that IPv4 address - a DNS64 resolver's synthesized address of a public host stays fetchable;
* IPv6 outside 2000::/3 (the only range IANA allocates for global unicast) is refused, which covers unspecified,
  loopback, ULA, link-local, site-local, multicast and every reserved block;
* inside 2000::/3 and for IPv4, every block of the registries whose "globally reachable" is not True is refused
  (Teredo too: its client address is obfuscated and its server address is only a relay).

Registries: https://www.iana.org/assignments/iana-ipv4-special-registry and iana-ipv6-special-registry.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

_V4, _V6 = ipaddress.IPv4Network, ipaddress.IPv6Network
_Addr = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv4 special-purpose blocks that are not globally reachable, plus multicast (not unicast at all)
_V4_BLOCKED = tuple(_V4(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
))
# blocks inside those that the registry marks globally reachable (anycast services)
_V4_GLOBAL = tuple(_V4(n) for n in ("192.0.0.9/32", "192.0.0.10/32"))

_V6_UNICAST = _V6("2000::/3")
_V6_BLOCKED = tuple(_V6(n) for n in (
    "2001::/23",  # IETF protocol assignments (Teredo 2001::/32, benchmarking, ORCHID), except _V6_GLOBAL
    "2001:db8::/32", "3fff::/20",  # documentation
))
_V6_GLOBAL = tuple(_V6(n) for n in (
    "2001:1::1/128", "2001:1::2/128", "2001:1::3/128", "2001:3::/32", "2001:4:112::/48", "2001:20::/28",
    "2001:30::/28",
))
# IPv6 forms with an IPv4 address in their last 32 bits
_V6_EMBEDDING = tuple(_V6(n) for n in (
    "::ffff:0:0/96",  # IPv4-mapped
    "::/96",  # IPv4-compatible (deprecated)
    "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
    "64:ff9b::/96",  # well-known NAT64 prefix
))
_SIX_TO_FOUR = _V6("2002::/16")  # the IPv4 address is bits 16..48


def embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, when it is one of the forms that carry one."""
    if any(addr in net for net in _V6_EMBEDDING):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(addr) >> 80) & 0xFFFFFFFF)
    return None


def judged(addr: _Addr) -> _Addr:
    """The address to judge: the embedded IPv4 address where there is one."""
    if isinstance(addr, ipaddress.IPv6Address):
        inner = embedded_ipv4(addr)
        if inner is not None:
            return inner
    return addr


@lru_cache(maxsize=65536)
def is_public(ip: str) -> bool:
    """True when ``ip`` is a globally reachable unicast address (after unwrapping an embedded IPv4 address)."""
    addr = judged(ipaddress.ip_address(ip))
    if isinstance(addr, ipaddress.IPv4Address):
        return not any(addr in net for net in _V4_BLOCKED) or any(addr in net for net in _V4_GLOBAL)
    if addr not in _V6_UNICAST:
        return False
    return not any(addr in net for net in _V6_BLOCKED) or any(addr in net for net in _V6_GLOBAL)


class AllowList:
    """``download.allow``: networks or ``address:port`` admitted despite being private (``10.0.0.0/8``,
    ``127.0.0.1:8080``, ``[fd00::1]:443``). An embedded IPv4 address is admitted by an IPv4 entry."""

    def __init__(self, entries: tuple[str, ...]):
        self.nets: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]] = []
        for e in entries:
            addr, port = e, None
            if e.count(":") == 1 or e.startswith("["):  # v4:port or [v6]:port
                addr, _, p = e.rpartition(":")
                addr, port = addr.strip("[]"), int(p)
            self.nets.append((ipaddress.ip_network(addr, strict=False), port))

    def admits(self, addr: _Addr, port: int) -> bool:
        forms = {addr, judged(addr)}
        return any(a in net and (p is None or p == port) for net, p in self.nets for a in forms
                   if a.version == net.version)


def blocked(ip: str, port: int, allow: AllowList) -> bool:
    """True when connecting to ip:port is refused."""
    if allow.nets and allow.admits(ipaddress.ip_address(ip), port):
        return False
    return not is_public(ip)
