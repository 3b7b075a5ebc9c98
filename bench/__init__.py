"""Benchmarks that print the project's figures next to a peer's (see bench/README.md)."""
