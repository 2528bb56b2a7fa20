"""DNS lookups through dnspython with the gateway's own nameservers and timeout.

TXT for DKIM keys (every inbound message); MX, A and AAAA for `gateway doctor`.
"""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.resolver

from gateway.errors import ConfigError, DnsTemporaryFailure

# EDNS payload size recommended by DNS Flag Day 2020: large enough for a
# 2048-bit DKIM key over UDP, small enough to avoid IP fragmentation.
_EDNS_PAYLOAD = 1232


def parse_nameserver(text: str) -> dns.nameserver.Do53Nameserver:
    """Parse "IP", "IP:PORT", "IPv6" or "[IPv6]:PORT" into a nameserver, or raise ConfigError."""
    host, port = text.strip(), "53"
    if host.startswith("["):
        host, sep, port = host[1:].partition("]:")
        if not sep:
            raise ConfigError(f"invalid nameserver {text!r}: expected [IPv6]:PORT")
    elif host.count(":") == 1:
        host, _, port = host.partition(":")
    try:
        address = ipaddress.ip_address(host)
        port_number = int(port)
    except ValueError:
        raise ConfigError(f"invalid nameserver {text!r}: expected IP or IP:PORT") from None
    if not 0 < port_number < 65536:
        raise ConfigError(f"invalid nameserver {text!r}: port out of range")
    return dns.nameserver.Do53Nameserver(str(address), port_number)


def _host(name: dns.name.Name) -> str:
    """A host name as the gateway compares them: lower case, no final dot, "" for the root."""
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


class TxtResolver:
    """Looks up TXT (and MX, A, AAAA) records; `dkim_dnsfunc` is the `dnsfunc` seam dkimpy expects.

    Built from the `[dns]` settings: `nameservers` (empty means the system
    resolver, /etc/resolv.conf) and `timeout` in seconds for the whole lookup.
    Safe to share between worker threads: each lookup is independent and the
    resolver's configuration is never changed after construction.
    """

    def __init__(self, nameservers: list[str], timeout: float) -> None:
        if timeout <= 0:
            raise ConfigError("dns.timeout must be positive")
        self._timeout = timeout
        self._resolver: dns.resolver.Resolver | None
        if nameservers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [parse_nameserver(item) for item in nameservers]
            self._resolver = resolver
        else:
            try:
                self._resolver = dns.resolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration:
                # Lookups then fail temporarily: the host may gain a
                # resolv.conf later, and refusing mail permanently would be wrong.
                self._resolver = None
        if self._resolver is not None:
            self._resolver.timeout = timeout
            self._resolver.lifetime = timeout
            self._resolver.use_edns(0, 0, _EDNS_PAYLOAD)
            # Answers are cached for their own TTL, as any MTA's resolver would:
            # one lookup per sender domain and TTL instead of one per message.
            self._resolver.cache = dns.resolver.LRUCache(max_size=10_000)

    @property
    def timeout(self) -> float:
        return self._timeout

    def lookup_txt(self, name: str) -> list[bytes] | None:
        """Return every TXT record at `name` (strings joined), None when there is none.

        Raises DnsTemporaryFailure on timeout, SERVFAIL or no usable nameserver.
        """
        rdatas = self._resolve(name, dns.rdatatype.TXT)
        if rdatas is None:
            return None
        return [
            b"".join(rdata.strings)
            for rdata in rdatas
            if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
        ]

    def lookup_mx(self, name: str) -> list[tuple[int, str]] | None:
        """(preference, exchange) of every MX at `name`, lowest preference first; None if none.

        Exchanges are lower case without the trailing dot; a null MX (RFC 7505)
        reads as exchange "". Raises DnsTemporaryFailure like `lookup_txt`.
        """
        rdatas = self._resolve(name, dns.rdatatype.MX)
        if rdatas is None:
            return None
        return sorted(
            (rdata.preference, _host(rdata.exchange))
            for rdata in rdatas
            if isinstance(rdata, dns.rdtypes.ANY.MX.MX)
        )

    def lookup_addresses(self, name: str) -> list[str]:
        """Every A and AAAA address of `name` (possibly none). Raises DnsTemporaryFailure."""
        addresses: list[str] = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            for rdata in self._resolve(name, rdtype) or []:
                if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
                    addresses.append(str(ipaddress.ip_address(rdata.address)))
        return addresses

    def _resolve(self, name: str, rdtype: dns.rdatatype.RdataType) -> list[dns.rdata.Rdata] | None:
        """The records of `rdtype` at `name`, None when there are none (NXDOMAIN or no data)."""
        if self._resolver is None:
            raise DnsTemporaryFailure("DNS lookup failed temporarily")
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException:
            return None  # not a valid DNS name: nothing can be published there
        try:
            answer = self._resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            return None
        except dns.exception.Timeout:
            raise DnsTemporaryFailure("DNS lookup timed out") from None
        except dns.exception.DNSException:
            # NoNameservers (SERVFAIL / REFUSED everywhere) and the rest.
            raise DnsTemporaryFailure("DNS lookup failed temporarily") from None
        if answer.rrset is None:
            return None
        return list(answer.rrset)

    def dkim_dnsfunc(self, name: bytes, timeout: int = 5) -> bytes | None:
        """The TXT record at `name` as dkimpy's `dnsfunc` returns it, or None.

        dkimpy passes its own `timeout` (default 5 s); the configured
        `dns.timeout` governs instead, so operators have one knob. When several
        TXT records exist the DKIM key record (v=DKIM1) is preferred.
        """
        del timeout
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            return None
        records = self.lookup_txt(text)
        if not records:
            return None
        for record in records:
            if record.lstrip().startswith(b"v=DKIM1"):
                return record
        return records[0]
