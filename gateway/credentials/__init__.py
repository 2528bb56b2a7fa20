"""Teletransmission credentials: homologated software, issuing, AUTH checks, expiry notices."""
