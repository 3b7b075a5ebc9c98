"""The provider simulators: test and demo equipment, one per provider, served over HTTP.

No production module imports them; only the demo does (the import-linter contract in
pyproject.toml says so). ``python -m worker.simulators`` serves all five.
"""
