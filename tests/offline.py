"""Offline guards for tests that load checkpoints or SAEs: the hub in offline mode and every socket refused."""

from __future__ import annotations

import socket


class NetworkAttempt(AssertionError):
    """Raised by a refused socket: the code under test tried the network."""


def forbid_network(monkeypatch) -> None:
    """``HF_HUB_OFFLINE=1`` (env and the hub's already-read constant) and any socket connection fails the test."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def refuse(*args, **kwargs):
        raise NetworkAttempt(f"network attempt: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
