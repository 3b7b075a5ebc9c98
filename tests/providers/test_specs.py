"""Every registered provider is tested the same way: a contract test beside its own tests,
and its record walked for references (tests/providers/test_reference_shapes.py)."""

from __future__ import annotations

import importlib

import pytest

from tests.helpers import ROOT
from tests.providers.test_reference_shapes import WALKS
from worker.simulators.contract import Contract
from worker.simulators.seed import SimulatedAccount, simulated_accounts
from worker.specs import registry
from worker.specs.spec import ProviderSpec, load

BUILT_IN = registry.BUILTIN
IDS = [spec.type for spec in BUILT_IN]


@pytest.mark.parametrize("spec", BUILT_IN, ids=IDS)
def test_every_built_in_provider_keeps_the_contract_in_its_own_test_file(
    spec: ProviderSpec,
) -> None:
    module = importlib.import_module(f"tests.providers.test_{spec.type}_contract")
    contracts = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Contract) and value is not Contract
    ]
    assert len(contracts) == 1, spec.type
    assert contracts[0].__name__.startswith("Test")


def test_every_built_in_provider_has_its_whole_record_walked() -> None:
    assert [walk.name for walk in WALKS] == IDS


@pytest.mark.parametrize("spec", BUILT_IN, ids=IDS)
def test_every_built_in_provider_has_a_simulated_account_of_its_own_type(
    spec: ProviderSpec,
) -> None:
    assert spec.simulator is not None
    simulated = load(spec.simulator)
    assert isinstance(simulated, SimulatedAccount)
    assert simulated in simulated_accounts()
    account = simulated.start()
    try:
        assert account.provider_table()["type"] == spec.type
    finally:
        account.sim.stop()


def test_the_guide_to_adding_a_provider_names_what_the_code_reads() -> None:
    page = (ROOT / "docs" / "architecture" / "modules.md").read_text()
    guide = page[page.index("## Adding a provider") :]
    assert f'[project.entry-points."{registry.GROUP}"]' in guide
    assert "from worker.simulators.contract import Call, Contract, Description, WrongKey" in guide
    for path in ("worker/specs/registry.py", "worker/simulators/contract.py"):
        assert (ROOT / path).is_file()
        assert f"`{path}`" in guide
