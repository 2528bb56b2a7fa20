"""Benchmark harness of the gateway (issue 7): `python -m bench [--quick]`, never part of tests."""
