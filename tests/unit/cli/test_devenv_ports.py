"""Ports for a private broker: two adjacent ones, out of the way of outgoing connections."""

from __future__ import annotations

import socket

from kposture.cli.devenv import processes


def test_a_port_pair_is_free_and_below_the_ephemeral_range() -> None:
    port = processes.free_port_pair()
    assert 1024 <= port < processes._ephemeral_low() - 1
    # Both can be listened on: hold them, and the next pair must be another one.
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", port))
        second.bind(("127.0.0.1", port + 1))
        first.listen()
        second.listen()
        assert processes.free_port_pair() not in {port - 1, port, port + 1}
