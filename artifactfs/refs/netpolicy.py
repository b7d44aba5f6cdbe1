"""Which addresses a daemon serving other users may connect to for ``http(s)://`` references.

A root daemon on a training node sits inside the cluster network: a reference to
``http://127.0.0.1:PORT/``, to a metadata service (169.254.169.254) or to an internal host
would let any user who can log a reference make the daemon send requests there and read the
answers through the mount.  So such a daemon connects only to *global* addresses (Python's
``ipaddress.is_global``: no loopback, link-local, private, shared, reserved or multicast
address; IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry), unless the
operator names the host, the address or its network in ``[references] private_hosts``.

What is subtle:

* DNS rebinding: a name may resolve to a public address when checked and to 127.0.0.1 when
  connected.  :meth:`NetPolicy.create_connection` resolves once, checks *every* address the
  name has (one refused address refuses the name), and connects only to those very addresses;
  nothing resolves the name again.  Every connection of a request goes through it, redirects
  included, so a public server can not redirect the daemon to a private one.
* Proxies are not used for such requests (``http_proxy`` would connect on our behalf to
  whatever the URL names, out of our sight).
* TLS still checks the certificate against the host *name* (the socket is connected to the
  checked address; ``server_hostname`` is the name).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.parse
import urllib.request
from collections.abc import Sequence
from functools import partial
from typing import Any

from ..errors import PermissionDenied

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetPolicy:
    """The operator's ``private_hosts``: names (lower case), addresses and networks."""

    def __init__(self, private_hosts: Sequence[str] = ()) -> None:
        self._opener: urllib.request.OpenerDirector | None = None
        self.names: set[str] = set()
        self.nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for h in private_hosts:
            try:
                self.nets.append(ipaddress.ip_network(h, strict=False))
            except ValueError:
                self.names.add(h.lower().rstrip("."))

    def allowed(self, host: str, addr: str) -> bool:
        """Whether a connection to ``addr`` (an address ``host`` resolved to) is allowed."""
        ip: Address = ipaddress.ip_address(addr.partition("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_global and not ip.is_multicast:
            return True
        if host.lower().rstrip(".") in self.names:
            return True
        return any(ip in net for net in self.nets)

    def resolve(self, host: str, port: int) -> list[tuple[Any, ...]]:
        """``getaddrinfo`` of ``host``, every address checked; PermissionDenied names the
        first one refused."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise OSError(f"cannot resolve {host}: {e}") from None
        for info in infos:
            addr = str(info[4][0])
            if not self.allowed(host, addr):
                raise PermissionDenied(
                    f"{host} resolves to {addr}, a loopback, link-local or private address "
                    "that [references] private_hosts does not name")
        return infos

    def check_url(self, url: str) -> None:
        """Refuse a URL whose host resolves to an address this policy does not allow."""
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname:
            raise PermissionDenied(f"no host in {url}")
        self.resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))

    def create_connection(self, address: tuple[str, int], timeout: Any = None,
                          source_address: Any = None) -> socket.socket:
        """``socket.create_connection`` to the checked addresses of ``address`` only."""
        host, port = address
        err: OSError | None = None
        for family, type_, proto, _, sockaddr in self.resolve(host, port):
            sock = socket.socket(family, type_, proto)
            try:
                if timeout is not None and timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as e:
                sock.close()
                err = e
        raise err or OSError(f"cannot connect to {host}:{port}")

    def opener(self) -> urllib.request.OpenerDirector:
        """A urllib opener whose every connection goes through :meth:`create_connection`,
        with no proxy (made once)."""
        if self._opener is None:
            self._opener = self._make_opener()
        return self._opener

    def _make_opener(self) -> urllib.request.OpenerDirector:
        policy = self

        class HTTP(http.client.HTTPConnection):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, **kw)
                self._create_connection = policy.create_connection

        class HTTPS(http.client.HTTPSConnection):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, **kw)
                self._create_connection = policy.create_connection

        class HTTPHandler(urllib.request.HTTPHandler):
            def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
                return self.do_open(HTTP, req)

        class HTTPSHandler(urllib.request.HTTPSHandler):
            def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
                ctx = getattr(self, "_context", None)
                return self.do_open(partial(HTTPS, context=ctx), req)  # type: ignore[arg-type]

        return urllib.request.build_opener(urllib.request.ProxyHandler({}), HTTPHandler(),
                                           HTTPSHandler())
