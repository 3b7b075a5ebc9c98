"""The documentation says what the code does: the generated parts name every setting, event
and open fact; the README stays short and its links land; each alert has its runbook section.

`mkdocs build --strict` (scripts/test) renders the site and fails on a broken link or anchor;
these tests check what a build cannot: that the generated parts are complete.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from markdown.extensions.toc import slugify
from pydantic import BaseModel

from docs.gen import GenerationError, lifecycle, pages, providers
from docs.gen.settings import Meaning, Reference, load_meanings, load_schema, reference
from tests.helpers import ROOT
from worker import domain, settings
from worker.specs import registry

DOCS = ROOT / "docs"
TYPES = sorted(spec.type for spec in registry.BUILTIN)
README = ROOT / "README.md"
SECTIONS: dict[str, type[BaseModel]] = {
    "archive": settings.ArchiveSettings,
    "ledger": settings.LedgerSettings,
    "broker": settings.BrokerSettings,
    "defaults": settings.DefaultsSettings,
    "downloads": settings.DownloadSettings,
    "worker": settings.WorkerSettings,
    "metrics": settings.MetricsSettings,
}


def rows(table: str) -> dict[str, str]:
    """A generated table's rows, by the key in their first cell."""
    found = re.findall(r"^\| `([a-z_]+)` \|(.*)$", table, re.M)
    return dict(found)


# -- the configuration reference, generated from the JSON Schema ------------------------------


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_the_reference_has_a_row_with_a_meaning_for_every_key_of_a_section(name: str) -> None:
    table = rows(reference().section(name))
    assert sorted(table) == sorted(SECTIONS[name].model_fields)
    assert all(row.split("|")[-2].strip() for row in table.values())


def test_every_provider_key_is_in_its_types_table_or_the_common_one() -> None:
    ref = reference()
    common = rows(ref.common())
    for cls in settings.provider_classes():
        kind = get_args(cls.model_fields["type"].annotation)[0]
        own = rows(ref.provider(kind))
        for key in cls.model_fields:
            assert key in own or key in common, (kind, key)


def test_a_setting_without_a_meaning_stops_the_build() -> None:
    # given the meanings with one key of [archive] left out
    meanings = load_meanings()
    del meanings["archive"]["gate_check"]

    # then the reference cannot be generated, and says what to add where
    with pytest.raises(GenerationError, match=r"archive\.gate_check.*settings\.yaml"):
        Reference(load_schema(), meanings).whole()


def test_a_meaning_for_a_setting_that_is_gone_stops_the_build() -> None:
    meanings = load_meanings()
    meanings["archive"]["bucket_name"] = Meaning("a key the settings never had")

    with pytest.raises(GenerationError, match=r"archive\.bucket_name"):
        Reference(load_schema(), meanings).check()


def test_the_reference_takes_types_defaults_and_secrets_from_the_schema() -> None:
    ref = reference()
    archive = rows(ref.section("archive"))
    assert archive["part_size_mib"].startswith(" integer, 5 to 5,120 | `8` |")
    assert archive["bucket"].startswith(" string | **required** |")
    daily = rows(ref.provider("daily"))
    assert daily["api_key"].startswith(" secret | **required** |")
    assert "`api_key_file`" in daily["api_key"]


def test_the_example_config_names_every_key_too() -> None:
    example = (ROOT / "config" / "retention.example.toml").read_text()
    for name, cls in SECTIONS.items():
        for key in cls.model_fields:
            assert re.search(rf"^#?\s*{key}\s*=", example, re.M), (name, key)


# -- the lifecycle and the providers, generated from the code --------------------------------


def test_the_lifecycle_table_lists_every_event_with_its_states() -> None:
    table = lifecycle.lifecycle_table()
    for event, move in domain.LIFECYCLE.items():
        row = re.search(rf"^\| `{event.value}`.*$", table, re.M)
        assert row is not None, event
        cells = [cell.strip() for cell in row.group(0).split("|")]
        assert set(cells[3].split(", ")) == {s.value for s in move.sources}
        assert cells[4] == (move.target.value if move.target else "(unchanged)")


def test_an_event_without_a_comment_stops_the_build(tmp_path: Path) -> None:
    source = Path(domain.__file__).read_text()
    bare = re.sub(r'(    FINISH = "finish")  #[^\n]*', r"\1", source)
    (tmp_path / "domain.py").write_text(bare)

    with pytest.raises(GenerationError, match="FINISH in Event"):
        lifecycle.comments(domain.Event, tmp_path / "domain.py")


@pytest.mark.parametrize("kind", TYPES)
def test_every_fact_its_spec_declares_is_on_its_providers_page(kind: str) -> None:
    table = providers.facts_table(kind)
    facts = registry.spec(kind).facts
    assert facts
    for fact in facts:
        assert providers.markdown(fact) in table, fact


@pytest.mark.parametrize("kind", TYPES)
def test_every_sentence_its_adapter_marks_inferred_or_unknown_is_listed(kind: str) -> None:
    marked = len(providers.MARKER.findall(providers.docstring(kind)))
    listed = providers.facts_list(kind)
    assert marked > 0
    assert len(re.findall(r"\*\*\[(?:I|\?)[^\]]*\]\*\*", listed)) == marked


@pytest.mark.parametrize("kind", TYPES)
def test_every_field_its_spec_declares_inert_is_listed_with_its_reason(kind: str) -> None:
    table = providers.inert_table(kind)
    for path in registry.spec(kind).inert:
        assert f"| `{path}` |" in table, path


@pytest.mark.parametrize("kind", TYPES)
def test_every_provider_has_a_page_with_its_generated_parts(kind: str) -> None:
    page = (DOCS / "providers" / f"{kind}.md").read_text()
    made = {match.group(1) for match in pages.MARKER.finditer(page) if match.group(2) == kind}
    assert made == {
        "provider-facts",
        "provider-marked",
        "provider-inert",
        "provider-settings",
        "provider-adapter",
    }


def test_every_marker_in_the_pages_is_one_the_build_knows() -> None:
    known = set(pages.generators())
    for path in DOCS.rglob("*.md"):
        for match in pages.MARKER.finditer(path.read_text()):
            assert match.group(1) in known, (path, match.group(0))


# -- the README, and the pages it points to ----------------------------------------------------


def test_the_readme_stays_under_ten_kilobytes() -> None:
    assert len(README.read_bytes()) <= 10 * 1024


def test_the_readme_gives_the_two_commands_ci_and_a_new_user_run() -> None:
    readme = README.read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec ./scripts/test" in ci
    for command in ("./scripts/test", "./scripts/demo"):
        assert re.search(rf"^{re.escape(command)}\b", readme, re.M), command


def test_every_relative_link_in_the_readme_lands_on_a_file() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    relative = [link for link in links if not link.startswith(("http://", "https://"))]
    assert relative, "the README links into the docs"
    missing = [link for link in relative if not (ROOT / link).exists()]
    assert missing == []


def test_every_page_is_in_the_sites_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, str):
            listed.add(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(config["nav"])
    pages_on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages_on_disk == listed


# -- operations: the runbook and the metrics ---------------------------------------------------


def alerts() -> list[dict[str, Any]]:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def anchors(page: Path) -> set[str]:
    return {slugify(h, "-") for h in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}


def test_every_alert_has_a_runbook_section_under_its_own_name() -> None:
    runbook = DOCS / "operations" / "runbook.md"
    found = anchors(runbook)
    for rule in alerts():
        assert rule["alert"].lower() in found, rule["alert"]
        url = rule.get("annotations", {}).get("runbook_url")
        if url is not None:  # where an alert links its section, the link lands
            assert url.rsplit("#", 1)[-1] in found, (rule["alert"], url)


def test_the_metrics_page_says_how_several_workers_on_one_host_export() -> None:
    page = (DOCS / "operations" / "metrics.md").read_text()
    start = page.index("## Several workers on one host")
    several = page[start : page.index("\n## ", start + 1)]
    for needed in ("RETENTION_METRICS__PORT", "PROMETHEUS_MULTIPROC_DIR", "metrics_not_served"):
        assert needed in several, needed
