"""No provider answer can exhaust memory: what parsing JSON may take is counted first.

Parsed, JSON costs up to 50 times its bytes: 16 MiB of ``[{},{},...]`` once raised a sweep's
peak by 781 MiB, and the 64 MiB an Unsiloed result may be by 3.1 GiB, past the pod's limit.
``parse_cost`` bounds that cost on the raw bytes, and an answer over ``max_parse_mib`` is
refused before it is parsed. The hostile answers are fed to a process of its own under an
address-space limit (``tests/unit/json_memory_child.py``), where parsing them would end in a
MemoryError; the bound itself is measured there against the costliest shapes known.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from pydantic import SecretStr

from tests.helpers import ROOT, config_data, settings_of
from worker.bootstrap import build_runtime
from worker.domain import JobSnapshot
from worker.errors import BadResponse, ProviderUnavailable
from worker.fetch import Download, check_response
from worker.job import process_job
from worker.outcomes import Outcome
from worker.providers.base import HttpApi
from worker.providers.parsing import (
    JSON_VALUE_COST,
    MAX_PARSE_BYTES,
    _depth_ok,
    parse_cost,
    parse_json,
)
from worker.providers.unsiloed import UnsiloedProvider
from worker.simulators.unsiloed import UnsiloedSimulator
from worker.specs.unsiloed import UnsiloedSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from worker.simulators.s3server import S3Server

MiB = 1024 * 1024
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/self and sets RLIMIT_AS"
)


def child(*args: str) -> dict[str, Any]:
    """Run ``tests/unit/json_memory_child.py`` with ``args``; its JSON line."""
    run = subprocess.run(
        [sys.executable, "-m", "tests.unit.json_memory_child", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result: dict[str, Any] = json.loads(run.stdout.splitlines()[-1])
    return result


# -- the bound: what parse_cost counts --------------------------------------------------------


def per_byte(body: bytes) -> int:
    """What one byte of ``body`` adds to its cost: the text and the strings, per character."""
    cost = parse_cost(body)
    return (cost.bytes - JSON_VALUE_COST * cost.values) // len(body)


def test_each_key_and_value_is_counted_at_its_most() -> None:
    # given an array of two empty objects: the array, two objects, and a comma between
    body = b"[{},{}]"

    # then four characters introduce values, plus the outermost one
    assert parse_cost(body).values == 5
    assert parse_cost(body).bytes == 5 * JSON_VALUE_COST + 2 * len(body)


def test_characters_count_at_the_width_python_stores_them() -> None:
    assert per_byte(b'["plain ascii"]') == 1 + 1
    assert per_byte('["café"]'.encode()) == 1 + 1  # Latin-1: one byte a character
    assert per_byte('["Ā"]'.encode()) == 2 + 2
    assert per_byte('["東京"]'.encode()) == 2 + 2
    assert per_byte('["😀"]'.encode()) == 4 + 4


def test_an_escape_may_widen_the_strings_beyond_the_text() -> None:
    # "\ud83d\ude00" is twelve ASCII bytes that make one character, stored at four bytes
    assert per_byte(b'["\\ud83d\\ude00 and more"]') == 1 + 4


def test_utf16_and_utf32_bodies_count_at_the_widest() -> None:
    assert per_byte('["plain"]'.encode("utf-16-le")) == 4 + 4
    assert per_byte('["plain"]'.encode("utf-32")) == 4 + 4


def test_an_answer_that_costs_exactly_the_cap_is_parsed() -> None:
    body = b'{"items": [{"id": 1}, {"id": 2}]}'
    cost = parse_cost(body).bytes
    assert parse_json(body, what="the answer", max_parse=cost) == {"items": [{"id": 1}, {"id": 2}]}


def test_an_answer_that_costs_a_byte_more_than_the_cap_is_refused_and_says_what_to_raise() -> None:
    # given an answer whose cost is one byte over the cap
    body = b"[" + b",".join([b"{}"] * 100_000) + b"]"
    cost = parse_cost(body)
    assert cost.values == 200_001

    # when it is parsed
    with pytest.raises(BadResponse) as caught:
        parse_json(body, what="the answer to listing jobs", max_parse=cost.bytes - 1, provider="p")

    # then it is refused, naming the answer, the count, the cap and the setting to raise
    message = str(caught.value)
    assert message.startswith("the answer to listing jobs holds up to 200,001 JSON keys and")
    assert f"more than max_parse_mib allows ({(cost.bytes - 1) / MiB:,.1f} MiB)" in message
    assert f"raise max_parse_mib for provider p to at least {-(-cost.bytes // MiB)}" in message
    assert "the job stays at the provider" in message
    assert not caught.value.permanent  # read again on a later sweep, once the cap is raised


def test_the_default_cap_refuses_the_issues_16_mib_of_tiny_objects_and_takes_a_real_page() -> None:
    tiny = b"[" + b",".join(itertools.repeat(b"{}", 16 * MiB // 3)) + b"]"
    assert parse_cost(tiny).bytes > MAX_PARSE_BYTES
    # a page of 100 jobs of about 2 KiB each, Daily's largest
    job = {"id": "9b1c", "status": "finished", "output": {"recording": [{"url": "x" * 200}]}}
    page = json.dumps({"data": [dict(job, pad="y" * 1800)] * 100}).encode()
    assert parse_cost(page).bytes < MAX_PARSE_BYTES // 100


SIZE = 2 * MiB


def repeated(unit: bytes) -> bytes:
    return b"[" + b",".join(itertools.repeat(unit, SIZE // (len(unit) + 1))) + b"]"


def objects(template: str) -> bytes:
    """One-key objects, each with its own three-character key (and value)."""
    alphabet = [chr(c) for c in range(0x23, 0x7F) if chr(c) != "\\"]
    names = ("".join(t) for t in itertools.product(alphabet, repeat=3))
    units = (template.replace("K", name).replace("V", name[::-1]).encode() for name in names)
    return b"[" + b",".join(itertools.islice(units, SIZE // (len(template) + 5))) + b"]"


# The costliest shapes known, by what each value takes once parsed.
COSTLY: dict[str, Callable[[], bytes]] = {
    # one-key objects with distinct keys and values: the most a value was seen to take
    "distinct-keys-and-values": lambda: objects('{"K":"V"}'),
    "distinct-wide-keys-and-values": lambda: objects('{"KĀ":"VĀ"}'),
    "distinct-keys": lambda: objects('{"K":0}'),
    "nested-lists": lambda: repeated(b"[" * 63 + b"]" * 63),
    "nested-objects": lambda: repeated(b'{"":' * 60 + b"0" + b"}" * 60),
    "wide-strings-in-nested-lists": lambda: repeated(("[" * 62 + '"Ā"' + "]" * 62).encode()),
    "wide-strings-in-lists": lambda: repeated('["Ā"]'.encode()),
    "tiny-objects": lambda: repeated(b"{}"),
    # one string, stored at four bytes a character for the sake of one of them
    "a-long-string-past-u+ffff": lambda: b'["' + ("😀" + "a" * SIZE).encode() + b'"]',
    "a-long-escaped-string": lambda: b'["\\ud83d\\ude00' + b"a" * SIZE + b'"]',
    "ocr-words": lambda: repeated(b'{"text":"word","bbox":[1.5,2.5,3.5,4.5],"p":0.98}'),
}


@pytest.mark.slow
@linux_only
@pytest.mark.parametrize("shape", sorted(COSTLY))
def test_the_cost_counted_bounds_what_parsing_takes(shape: str, tmp_path: Path) -> None:
    # given a 2 MiB body of one of the costliest shapes known, in a file
    path = tmp_path / shape
    path.write_bytes(COSTLY[shape]())

    # when a process of its own parses it with no cap
    result = child("measure", str(path))

    # then its resident memory rose no further than the cost counted on its bytes (give or
    # take the allocator's pages)
    assert result["grown"] <= result["cost"] + MiB, result
    assert result["grown"] > result["cost"] // 5, result  # a bound, and not a wild one


# -- hostile answers under an address-space limit ---------------------------------------------


@pytest.mark.slow
@linux_only
@pytest.mark.parametrize(
    ("shape", "mib"),
    [("tiny-objects", 16), ("tiny-objects", 60), ("nested-lists", 60), ("unclosed", 60)],
)
def test_an_answer_of_tiny_containers_is_refused_within_512_mib_not_a_memory_error(
    shape: str, mib: int
) -> None:
    # given the body in a process whose address space may grow by 512 MiB more
    # when parse_json is handed it at the default cap
    result = child("parse", shape, str(mib), "512")

    # then it is refused before it is parsed, as a bad response naming the cap
    assert result["outcome"] == "refused", result
    assert "more than max_parse_mib allows (256.0 MiB): it was not parsed" in result["message"]
    assert result["grown"] < 16 * MiB


@pytest.mark.slow
@linux_only
@pytest.mark.parametrize("shape", ["result-of-tiny-objects", "result-of-nested-lists"])
def test_an_unsiloed_result_of_60_mib_of_tiny_containers_is_refused_naming_job_and_cap(
    shape: str,
) -> None:
    # given a 60 MiB result, under Unsiloed's max_result_mib of 64, served to the adapter in a
    # process whose address space may grow by 512 MiB
    # when the adapter reads it for the job's outputs
    result = child("unsiloed", shape, "60", "512")

    # then the result is refused unparsed, naming the provider, the job and the cap, and
    # the process held little beyond the body it read
    assert result["outcome"] == "refused", result
    message = result["message"]
    assert message.startswith("unsiloed: the answer to reading the result of job job-7f3a ")
    assert "more than max_parse_mib allows (256.0 MiB)" in message
    assert "raise max_parse_mib for provider unsiloed to at least" in message
    assert result["grown"] < 100 * MiB, result


@pytest.mark.slow
@linux_only
def test_a_genuine_8_mib_unsiloed_result_of_ocr_words_is_read_within_512_mib() -> None:
    result = child("unsiloed", "result-of-ocr-words", "8", "512")
    assert result["outcome"] == "parsed", result


# -- the depth check ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_depth_check_holds_one_iterator_a_level_not_every_value() -> None:
    # given a wide document: 200,000 small objects under one key
    document = {"result": [{"a": [1, 2]} for _ in range(200_000)]}

    # when its depth is checked
    tracemalloc.start()
    try:
        assert _depth_ok(document, 64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # then the check held next to nothing (a stack of every value held 12 MiB)
    assert peak < 64 * 1024


@pytest.mark.parametrize(
    ("value", "limit", "ok"),
    [
        (1, 1, True),
        ([], 1, True),
        ([1], 1, False),  # a member is one level below its container
        ([1], 2, True),
        ({"a": {"b": [1, {}]}}, 4, True),
        ({"a": {"b": [1, {}]}}, 3, False),
        ([[], [[]], [[[]]]], 4, True),
        ([[], [[]], [[[1]]]], 4, False),
    ],
)
def test_the_depth_check_counts_levels_as_before(value: Any, limit: int, ok: bool) -> None:
    assert _depth_ok(value, limit) is ok


# -- HttpApi and the adapters' settings ----------------------------------------------------------


def api(handler: httpx.MockTransport, *, max_parse: int) -> HttpApi:
    return HttpApi(
        provider="p",
        base_url="https://api.test",
        timeout=5,
        transport=handler,
        attempts=1,
        max_parse=max_parse,
    )


def test_an_answer_over_the_cap_is_a_bad_response_naming_the_provider() -> None:
    body = b"[" + b",".join([b"{}"] * 1000) + b"]"
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    with pytest.raises(BadResponse) as caught:
        api(transport, max_parse=64 * 1024).request("GET", "/jobs")
    assert str(caught.value).startswith("p: the answer to GET /jobs holds up to 2,001 JSON")
    assert "raise max_parse_mib for provider p to at least 1 " in str(caught.value)


def test_an_error_answer_over_the_cap_is_still_the_error_it_is() -> None:
    body = b"[" + b",".join([b"{}"] * 1000) + b"]"
    transport = httpx.MockTransport(lambda request: httpx.Response(503, content=body))
    with pytest.raises(ProviderUnavailable, match="answered 503"):
        api(transport, max_parse=64 * 1024).request("GET", "/jobs")


def test_each_provider_reads_its_answers_under_its_own_max_parse_mib() -> None:
    def settings(**extra: Any) -> UnsiloedSettings:
        return UnsiloedSettings(
            type="unsiloed", base_url="https://u.test", api_key=SecretStr("k"), **extra
        )

    assert UnsiloedProvider.build("u", settings()).api.max_parse == 256 * MiB == MAX_PARSE_BYTES
    assert UnsiloedProvider.build("u", settings(max_parse_mib=1024)).api.max_parse == 1024 * MiB


# -- Unsiloed's results, over HTTP ----------------------------------------------------


@pytest.fixture
def sim() -> Iterator[UnsiloedSimulator]:
    server = UnsiloedSimulator("unsiloed-key")
    server.start()
    yield server
    server.stop()


def ocr_result(words: int) -> bytes:
    """Unsiloed's result for a scan: a word a small object, with its box and confidence."""
    page = [
        {"text": f"w{i}", "bbox": [i % 600 + 0.5, i % 800 + 0.25, 12.75, 9.5], "confidence": 0.97}
        for i in range(words)
    ]
    body = {"job_id": "JOB", "file_url": "{{file_url}}", "file_name": "scan.pdf"}
    text = json.dumps(body | {"result": {"pages": [{"page": 1, "words": page}]}}, indent=1)
    return text.encode()


@pytest.mark.slow
def test_a_genuine_result_of_several_mib_of_small_objects_is_read_and_stored_exactly(
    sim: UnsiloedSimulator,
) -> None:
    # given a completed job whose result is 6 MiB of OCR words, indented as served
    served = ocr_result(50_000)
    assert len(served) > 6 * MiB
    job_id = sim.add_job("completed", job_id="JOB", result=served, document=b"%PDF-1.7\n")
    settings = UnsiloedSettings.model_validate(
        {"type": "unsiloed", "base_url": sim.base_url, "api_key": "unsiloed-key"}
    )
    provider = UnsiloedProvider.build("unsiloed", settings)
    try:
        snapshot = provider.get_job(job_id)
        assert isinstance(snapshot, JobSnapshot)

        # when the adapter reads it for the outputs, and the pipeline opens result.json
        result, source = provider.artifacts(snapshot)
        with provider.open_artifact(result) as response:
            check_response(response, result.source)
            download = Download(
                response, source=result.source, expected_size=None, deadline=time.monotonic() + 60
            )
            stored = b"".join(download.chunks())
    finally:
        provider.close()

    # then both are there, and result.json is the very bytes served, not a re-encoding
    assert (result.name, source.name) == ("result.json", "source/scan.pdf")
    assert stored == sim.results_served[-1][1]


def test_a_job_whose_result_costs_too_much_to_parse_stays_at_unsiloed_saying_why(
    sim: UnsiloedSimulator, s3_server: S3Server, s3: S3Client, bucket: str, sqlite_url: str
) -> None:
    # given a tracked completed job whose result, 48 KB of empty objects, could take more to
    # parse than the provider's max_parse_mib of 1
    served = b'{"job_id":"J1","file_url":"{{file_url}}","result":[' + b"{}," * 16_000 + b"{}]}"
    job_id = sim.add_job("completed", job_id="J1", result=served, document=b"%PDF-1.7\n")
    table = sim.provider_table(max_parse_mib=1)
    config = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=sqlite_url,
        providers={"unsiloed": table},
    )
    runtime = build_runtime(settings_of(config))
    try:
        runtime.ledger.operator.track("unsiloed", [job_id], now=datetime.now(UTC))

        # when the pipeline carries it
        result = process_job(runtime, "unsiloed", job_id)
    finally:
        runtime.close()

    # then it is deferred with the reason and the setting to raise; nothing stored or deleted
    assert result.outcome == Outcome.DEFERRED
    assert result.error is not None
    assert result.error.startswith(
        "unsiloed job J1: the answer to reading the result of job J1 holds up to 32,011 JSON "
        "keys and values in 47.1 KiB, which could take 4.5 MiB to parse"
    )
    assert "more than max_parse_mib allows (1.0 MiB)" in result.error
    assert "raise max_parse_mib for provider unsiloed to at least 5 " in result.error
    assert sim.deleted == []
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
