"""Greffe-side tools: exporting and decrypting filings, and (off the gateway) sync and receipts."""
