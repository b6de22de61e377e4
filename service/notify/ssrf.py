"""Which endpoints the service may call (server-side request forgery).

A URL is refused when it is not https (http only when allowed), carries credentials, or names a
host that resolves to an address that is not public: loopback, private (RFC 1918, ULA),
shared (100.64/10), link-local (169.254/16: cloud metadata lives there), multicast, reserved,
unspecified, or a known cloud-metadata address, unless the host or the address is allow-listed
(`TOH_WEBHOOK_ALLOWLIST`: host names and CIDRs). IPv4-mapped IPv6 addresses are judged as the
IPv4 address they carry. One refused address among a host's answers refuses the host (a
name cannot smuggle a private address among public ones).

The check runs when a Subscription is written (`check_url`, resolving when the name resolves)
and before every send (`resolve`), whose address the sender then connects to, so a name that
changes its answer between check and connect (DNS rebinding) still reaches only the address
that was checked.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

# Cloud instance metadata services outside link-local (AWS IPv6, Alibaba, Oracle's is link-local)
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200"),
                                ipaddress.ip_address("169.254.169.254")})


class EndpointRefused(ValueError):
    """The endpoint may not be called; str() says why (fit for an OperationOutcome)."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address host resolves to (getaddrinfo); raises OSError when it does not resolve."""
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to."""

    url: SplitResult
    host: str
    port: int
    address: str


@dataclass(frozen=True)
class EndpointPolicy:
    """The SSRF rules (see module docstring)."""

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[Network, ...] = ()
    allow_http: bool = False
    resolver: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def from_settings(cls, allowlist: str | Iterable[str] = "", allow_http: bool = False,
                      resolver: Resolver = system_resolver) -> EndpointPolicy:
        """From TOH_WEBHOOK_ALLOWLIST ("hooks.clinic.local,10.2.0.0/16,127.0.0.1": comma or space
        separated) and TOH_WEBHOOK_ALLOW_HTTP. Raises ValueError for a malformed CIDR-looking entry."""
        items = allowlist.replace(",", " ").split() if isinstance(allowlist, str) else list(allowlist)
        hosts, networks = set(), []
        for item in items:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                if "/" in item:
                    raise ValueError(f"TOH_WEBHOOK_ALLOWLIST: {item!r} is not a CIDR") from None
                hosts.add(item.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks), allow_http, resolver)

    def parse(self, url: str) -> tuple[SplitResult, str, int]:
        """The URL, its host and port, if its form is allowed; raises EndpointRefused."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise EndpointRefused(f"The endpoint is not a valid URL: {exc}") from None
        if parts.scheme not in ("https", "http"):
            raise EndpointRefused("The endpoint must be an https URL")
        if parts.scheme == "http" and not self.allow_http:
            raise EndpointRefused("The endpoint must use https (plain http is allowed only with TOH_WEBHOOK_ALLOW_HTTP=1)")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise EndpointRefused("The endpoint must not carry credentials in its URL (use a channel header)")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise EndpointRefused("The endpoint URL has no host")
        return parts, host, port or (443 if parts.scheme == "https" else 80)

    def address_allowed(self, host: str, address: str) -> bool:
        """Whether connecting to address (which host resolved to) is allowed."""
        if host in self.allow_hosts:
            return True
        ip: IPAddress = ipaddress.ip_address(address.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allow_networks):
            return True
        if ip in METADATA_ADDRESSES:
            return False
        return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local)

    def check_url(self, url: str) -> None:
        """Check an endpoint when it is registered: its form, and its addresses when the name
        resolves now (one that does not resolve is checked again on every send). Raises
        EndpointRefused."""
        parts, host, port = self.parse(url)
        try:
            addresses = self._addresses(host, port)
        except OSError:
            return
        self._check_addresses(host, addresses)

    def resolve(self, url: str) -> Target:
        """The checked target of a send: the URL and the first allowed address to connect to.
        Raises EndpointRefused (form, a refused address, or a name that does not resolve)."""
        parts, host, port = self.parse(url)
        try:
            addresses = self._addresses(host, port)
        except OSError as exc:
            raise EndpointRefused(f"The endpoint's host {host} does not resolve ({exc})") from None
        self._check_addresses(host, addresses)
        return Target(parts, host, port, addresses[0])

    def _addresses(self, host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            found = self.resolver(host, port)
        if not found:
            raise OSError("no address")
        return found

    def _check_addresses(self, host: str, addresses: list[str]) -> None:
        refused = [a for a in addresses if not self.address_allowed(host, a)]
        if refused:
            raise EndpointRefused(f"The endpoint's host {host} resolves to {refused[0]}, a loopback, private, "
                                  "link-local, multicast or metadata address; allow-list it with "
                                  "TOH_WEBHOOK_ALLOWLIST if it is meant")
