"""The test servers' ports lie where the kernel never hands one out by itself."""

from __future__ import annotations

import socket

import pytest

from tests.fixtures import ports
from tests.fixtures.ports import ephemeral_range, free_port, free_ports


def test_ports_are_distinct_free_and_outside_the_ephemeral_range() -> None:
    low, high = ephemeral_range()
    ports = free_ports(8)
    assert len(set(ports)) == 8
    assert all(not low <= port <= high for port in ports), (ports, low, high)
    held = []
    try:
        for port in ports:  # each is free to bind now, without SO_REUSEADDR
            sock = socket.socket()
            held.append(sock)
            sock.bind(("127.0.0.1", port))
    finally:
        for sock in held:
            sock.close()


def test_a_port_in_use_is_never_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    taken, other = free_ports(2)
    monkeypatch.setattr(ports, "_candidates", lambda: [taken, other])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        assert all(free_port() == other for _ in range(20))
        with pytest.raises(RuntimeError, match="found 1 free ports of 2"):
            free_ports(2)


def test_an_outgoing_connection_never_takes_a_picked_port() -> None:
    # The kernel picks the source port of an outgoing connection in its ephemeral range.
    low, high = ephemeral_range()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as client:
            assert low <= client.getsockname()[1] <= high
    assert all(not low <= port <= high for port in free_ports(8))
