"""A small real DNS server on loopback (UDP and TCP) serving TXT, MX, A and AAAA.

`gateway demo` publishes its guardian's DKIM key with it; the tests use it
too (`tests/fixtures/dnsserver.py` wraps it in a fixture).
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

_TTL = 60
# Over TCP only the 16-bit length prefix limits a response; say so
# explicitly, or dnspython would cap it at the client's EDNS payload size.
_TCP_MAX = 65535


def _txt_rdata(text: str) -> dns.rdtypes.ANY.TXT.TXT:
    # A TXT character-string holds at most 255 bytes: split longer values,
    # as a zone file would publish a 2048-bit DKIM key.
    data = text.encode("utf-8")
    chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)


def _normalise(name: str) -> str:
    return name.strip().rstrip(".").lower()


class DnsServer:
    """Authoritative-for-everything TXT server on 127.0.0.1.

    `records` maps names ("sel._domainkey.example.org", no trailing dot) to
    TXT values and may be changed while the server runs; `publish` adds
    records of other types (MX, A, AAAA) in zone-file form. Names absent from
    both answer NXDOMAIN; a name that has records, but none of the type asked,
    answers with no data. `blackhole` (every query) or `silent` (these names) make
    the server read queries and never answer, to simulate a timeout;
    `servfail` names answer SERVFAIL. `queries` lists every name asked.
    """

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.typed: dict[tuple[str, str], list[str]] = {}
        self.blackhole = False
        self.silent: set[str] = set()
        self.servfail: set[str] = set()
        self.queries: list[str] = []
        self._udp: socketserver.ThreadingUDPServer | None = None
        self._tcp: socketserver.ThreadingTCPServer | None = None
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        if self._udp is None:
            raise RuntimeError("DNS server not started")
        return int(self._udp.server_address[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def publish(self, name: str, rdtype: str, *values: str) -> None:
        """Add records of `rdtype` at `name`, e.g. ("example.org", "MX", "10 mx.example.org.")."""
        self.typed.setdefault((_normalise(name), rdtype.upper()), []).extend(values)

    def start(self) -> None:
        self._udp, self._tcp = _bind_pair(self)
        for server in (self._udp, self._tcp):
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for server in (self._udp, self._tcp):
            if server is not None:
                server.shutdown()
                server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._udp = self._tcp = None
        self._threads = []

    def answer(self, query: dns.message.Message, max_size: int) -> bytes | None:
        """The response to one query in wire form, or None to stay silent."""
        if not query.question:
            return None
        question = query.question[0]
        name = _normalise(question.name.to_text())
        self.queries.append(name)
        if self.blackhole or name in self.silent:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        values = self.records.get(name)
        typed = self.typed.get((name, dns.rdatatype.to_text(question.rdtype)))
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif values is None and not any(key[0] == name for key in self.typed):
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT and values:
            rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, dns.rdatatype.TXT)
            for value in values:
                rrset.add(_txt_rdata(value), _TTL)
            response.answer.append(rrset)
        elif typed:
            rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, question.rdtype)
            for value in typed:
                rrset.add(dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, value), _TTL)
            response.answer.append(rrset)
        return _to_wire(response, max_size)


def _to_wire(response: dns.message.Message, max_size: int) -> bytes:
    """Encode; over UDP, a response too large is truncated (TC) so the client retries on TCP."""
    try:
        return response.to_wire(max_size=max_size)
    except dns.exception.TooBig:
        response.answer = []
        response.flags |= dns.flags.TC
        return response.to_wire()


class _UdpHandler(socketserver.BaseRequestHandler):
    server: _UdpServer

    def handle(self) -> None:
        wire, sock = self.request
        query = _parse(wire)
        if query is None:
            return
        max_size = max(512, query.payload) if query.edns >= 0 else 512
        reply = self.server.dns.answer(query, max_size)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TcpHandler(socketserver.BaseRequestHandler):
    server: _TcpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(5)
        try:
            while True:
                length = _recv_exact(sock, 2)
                if length is None:
                    return
                wire = _recv_exact(sock, struct.unpack("!H", length)[0])
                query = None if wire is None else _parse(wire)
                if query is None:
                    return
                reply = self.server.dns.answer(query, _TCP_MAX)
                if reply is None:
                    continue  # silent: the client waits for its timeout
                sock.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return


def _parse(wire: bytes) -> dns.message.Message | None:
    try:
        return dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True

    def __init__(self, dns_server: DnsServer, port: int) -> None:
        self.dns = dns_server
        super().__init__(("127.0.0.1", port), _UdpHandler)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, dns_server: DnsServer, port: int) -> None:
        self.dns = dns_server
        super().__init__(("127.0.0.1", port), _TcpHandler)


def _bind_pair(dns_server: DnsServer) -> tuple[_UdpServer, _TcpServer]:
    """Bind UDP on an ephemeral port, then TCP on the same number (retrying if taken)."""
    for _ in range(20):
        udp = _UdpServer(dns_server, 0)
        try:
            tcp = _TcpServer(dns_server, int(udp.server_address[1]))
        except OSError:
            udp.server_close()
            continue
        return udp, tcp
    raise RuntimeError("could not bind a UDP and TCP port pair on 127.0.0.1")
