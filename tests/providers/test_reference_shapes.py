"""Every shape of reference to stored data keeps the job, at each of the five providers.

The shapes (``tests/providers/shapes.py``) are injected into the records the providers'
simulators serve over HTTP, at the top level and inside an output item, and the adapter must
keep the job (``Kept``, reason ``unrecognised_output``) naming each field by its JSON path and
never by its value. Daily, where such records were deleted with nothing archived, also goes
through the whole pipeline: kept, nothing archived, no delete sent.

Then, as properties over the five adapters' pure verdicts (``unrecognised_of``): a valid
record raises no false alarm, and a job is deleted only if every reference injected into it,
in any shape, at any place and depth, was archived or is in a section named in
``ignore_outputs``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from tests.helpers import config_data, objects, settings_of
from tests.providers.shapes import SHAPE_IDS, SHAPES, SIGNATURE, Shape, any_shape
from worker.bootstrap import build_runtime
from worker.domain import JobSnapshot
from worker.errors import BadResponse, Kept
from worker.job import process_job
from worker.outcomes import Outcome
from worker.providers import build_provider
from worker.providers import daily as daily_adapter
from worker.providers import datocms as dato_adapter
from worker.providers import huawei_mpc as mpc_adapter
from worker.providers import loom as loom_adapter
from worker.providers import unsiloed as unsiloed_adapter
from worker.providers.base import Provider
from worker.providers.outputs import (
    Path,
    dotted,
    is_inert,
    section_of,
    unrecognised,
    within,
)
from worker.settings import ProviderSettings
from worker.simulators.daily import DailySimulator
from worker.simulators.datocms import DatoCmsSimulator
from worker.simulators.huawei_mpc import HuaweiMpcSimulator
from worker.simulators.loom import LoomSimulator
from worker.simulators.s3server import S3Server
from worker.simulators.unsiloed import UnsiloedSimulator
from worker.specs.inert import Inert

if TYPE_CHECKING:
    from pathlib import Path as FilePath

    from mypy_boto3_s3 import S3Client

PROVIDER_SETTINGS: TypeAdapter[ProviderSettings] = TypeAdapter(ProviderSettings)
PDF = b"%PDF-1.7\n%%EOF\n"


def connect(name: str, table: dict[str, Any]) -> Provider:
    return build_provider(name, PROVIDER_SETTINGS.validate_python(table))


def kept(provider: Provider, job_id: str) -> Kept:
    """The Kept error the adapter raises when asked for the job's outputs; then it is closed."""
    try:
        snap = provider.get_job(job_id)
        assert isinstance(snap, JobSnapshot)
        with pytest.raises(Kept) as caught:
            provider.artifacts(snap)
    finally:
        provider.close()
    return caught.value


def assert_names(error: Kept, shape: Shape, prefix: str) -> None:
    """The job is kept for an unrecognised output, naming each field, never a value."""
    assert error.reason == "unrecognised_output"
    assert not error.permanent
    message = str(error)
    for path in shape.under(prefix):
        assert f"`{path}`" in message, (path, message)
    assert "nothing deleted" in message
    assert SIGNATURE not in message
    assert "://" not in message


# -- simulators, one per module: each test adds jobs of its own ----------------------------


@pytest.fixture(scope="module")
def daily() -> Iterator[DailySimulator]:
    sim = DailySimulator("daily-shapes-key-3b7e1f")
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def loom() -> Iterator[LoomSimulator]:
    sim = LoomSimulator("loom-shapes-key-51ac", "loom-shapes-secret-9d02")
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def mpc() -> Iterator[HuaweiMpcSimulator]:
    sim = HuaweiMpcSimulator("0b1c2d3e4f5a46b7a8d9e0f1a2b3c4d5", token="MIIT-shapes-token-77")
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def unsiloed() -> Iterator[UnsiloedSimulator]:
    sim = UnsiloedSimulator("unsiloed-shapes-key-2f9c")
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def dato() -> Iterator[DatoCmsSimulator]:
    sim = DatoCmsSimulator("dato-shapes-token-6a1d")
    sim.start()
    yield sim
    sim.stop()


def merged(target: dict[str, Any], shape: Shape) -> None:
    clash = target.keys() & shape.fields.keys()
    assert not clash, f"the shape would replace {clash}"
    target.update(json.loads(json.dumps(shape.fields)))


# -- Daily ---------------------------------------------------------------------------------

DAILY_PLACES = {"top level": "", "output item": "output.transcription[0]"}


@pytest.mark.parametrize("where", DAILY_PLACES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_every_shape_in_a_daily_record_keeps_the_job(
    daily: DailySimulator, shape: Shape, where: str
) -> None:
    # given a finished job whose record gains the shape at the top level or in its transcript
    job_id = daily.add_job(transcription=[("txt", b"hello")])
    record = daily._job_json(daily.jobs[job_id])
    merged(record if where == "top level" else record["output"]["transcription"][0], shape)
    daily.inject(method="GET", path=f"/{job_id}$", status=200, body=record)

    # when its outputs are asked for, then it is kept, naming the fields by their paths
    assert_names(kept(connect("daily", daily.provider_table()), job_id), shape, DAILY_PLACES[where])
    # and nothing was fetched for it or deleted
    assert daily.seen("GET", f"/{job_id}/access-link") == []
    assert job_id not in daily.deleted


@pytest.mark.parametrize(
    ("shape", "where"),
    [
        (SHAPES[SHAPE_IDS.index("aws-casing pair")], "top level"),
        (SHAPES[SHAPE_IDS.index("aws-casing pair")], "output item"),
        (SHAPES[SHAPE_IDS.index("snake _file")], "top level"),
        (SHAPES[SHAPE_IDS.index("_s3_key")], "output item"),
        (SHAPES[SHAPE_IDS.index("list of {name, key}")], "top level"),
        (SHAPES[SHAPE_IDS.index("{key} without a bucket")], "output item"),
        (SHAPES[SHAPE_IDS.index("a relative download path")], "output item"),
    ],
    ids=lambda value: value if isinstance(value, str) else value.label,
)
def test_a_daily_job_naming_data_nobody_archived_is_kept_with_nothing_deleted(
    daily: DailySimulator,
    shape: Shape,
    where: str,
    bucket: str,
    s3: S3Client,
    s3_server: S3Server,
    tmp_path: FilePath,
) -> None:
    # given a due, finished job whose record names data in one more shape
    job_id = daily.add_job(transcription=[("txt", b"hello")])
    record = daily._job_json(daily.jobs[job_id])
    merged(record if where == "top level" else record["output"]["transcription"][0], shape)
    daily.inject(method="GET", path=f"/{job_id}$", status=200, body=record, times=10)
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=f"sqlite:///{tmp_path}/ledger.db",
        providers={"daily": daily.provider_table()},
    )
    rt = build_runtime(settings_of(data))
    try:
        rt.ledger.operator.track("daily", [job_id], now=rt.clock())

        # when the worker processes it
        result = process_job(rt, "daily", job_id)
    finally:
        rt.close()
        daily.clear_faults()

    # then it is kept, saying which field, and nothing was archived or deleted
    assert result.outcome == Outcome.KEPT, result.error
    for path in shape.under(DAILY_PLACES[where]):
        assert f"`{path}`" in (result.error or "")
    assert daily.deletes_of(job_id) == 0
    assert objects(s3, bucket) == {}


# -- Loom ----------------------------------------------------------------------------------

LOOM_PLACES = {
    "top level": "",
    "job_files": "job_data.job_files",
    "transcript item": "job_data.job_files.output_files.transcripts[0]",
}


@pytest.mark.parametrize("where", LOOM_PLACES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_every_shape_in_a_loom_record_keeps_the_job(
    loom: LoomSimulator, shape: Shape, where: str
) -> None:
    ref = loom.add_job(inputs=[("a.mp3", "audio", b"a")], transcripts=[("t.txt", b"t")])
    record = loom._details_json(loom.jobs[ref])
    files = record["job_data"]["job_files"]
    target = {
        "top level": record,
        "job_files": files,
        "transcript item": files["output_files"]["transcripts"][0],
    }[where]
    merged(target, shape)
    # Read twice: the job, then fresh links for its outputs.
    loom.inject(method="POST", path=f"/{ref}/details$", status=200, body=record, times=2)
    try:
        assert_names(kept(connect("loom", loom.provider_table()), ref), shape, LOOM_PLACES[where])
    finally:
        loom.clear_faults()
    assert ref not in loom.deleted


# -- Huawei MPC ----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["top level", "transcode_detail"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_every_shape_in_an_mpc_task_keeps_the_task(
    mpc: HuaweiMpcSimulator, shape: Shape, where: str
) -> None:
    fields = json.loads(json.dumps(shape.fields))
    if where == "top level":
        task = mpc.add_task("SUCCEEDED", output_file_name=["ok.mp4"], extra=fields)
        prefix = ""
    else:
        detail = {"transcode_detail": {"multitask_info": [], **fields}}
        task = mpc.add_task("SUCCEEDED", output_file_name=["ok.mp4"], extra=detail)
        prefix = "transcode_detail"
    provider = connect("mpc", mpc.provider_table())
    assert_names(kept(provider, task), shape, prefix)
    assert task not in mpc.deleted


# -- Unsiloed ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["job", "result_json"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_every_shape_in_an_unsiloed_job_or_result_keeps_the_job(
    unsiloed: UnsiloedSimulator, shape: Shape, where: str
) -> None:
    # given a completed job whose record or result gains the shape at its top level
    result: dict[str, Any] = {
        "job_id": "",
        "status": "completed",
        "file_name": "document.pdf",
        "file_url": "{{file_url}}",
        "metadata": {"page_count": 1},
        "result": {"total": {"value": "12", "score": 0.9}},
    }
    if where == "result_json":
        merged(result, shape)
    job_id = unsiloed.add_job("completed", document=PDF)
    result["job_id"] = job_id
    unsiloed.jobs[job_id].result = json.dumps(result).encode()
    if where == "job":
        record = unsiloed._job_json(unsiloed.jobs[job_id])
        merged(record, shape)
        unsiloed.inject(method="GET", path=f"/jobs/{job_id}$", status=200, body=record)

    # when its outputs are asked for, then it is kept, naming the field in its answer
    provider = connect("unsiloed", unsiloed.provider_table())
    assert_names(kept(provider, job_id), shape, where)
    assert job_id not in unsiloed.deleted


# -- DatoCMS -------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["top level", "attributes"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_every_shape_in_a_datocms_track_keeps_the_job(
    dato: DatoCmsSimulator, shape: Shape, where: str
) -> None:
    job_id = dato.add_track(dato.add_upload())
    upload_id, track_id = job_id.split("/")
    resource = dato._track_json(dato.uploads[upload_id].tracks[track_id])
    merged(resource if where == "top level" else resource["attributes"], shape)
    dato.inject(method="GET", path="/tracks$", status=200, body={"data": [resource]})
    prefix = "" if where == "top level" else "attributes"
    assert_names(kept(connect("dato", dato.provider_table()), job_id), shape, prefix)
    assert not dato.seen("DELETE")


# -- any shape, anywhere, at any provider: a property over the five adapters' walks ----------
#
# Pure: a valid record of each provider (the documented fields, as the contract tests and the
# simulators serve them), one shape injected at a random place and depth, and the adapter's
# own verdict (``unrecognised_of``, which ``artifacts`` turns into ``Kept``). A job is deleted
# only if its verdict is empty, so: every injected reference is claimed (archived), in a
# section named in ``ignore_outputs``, or named by the verdict; and the verdict names nothing
# else (a valid record raises no false alarm).

_ids = st.uuids().map(str)
_times = st.sampled_from(["2024-01-15T10:30:00.000Z", "2024-05-01T12:30:00+00:00"])
_text = st.sampled_from(["", "Processing failed", "Error: Failed to transcribe. May be invalid"])
# Daily's access link, which the record may also carry beside an s3Config [I].
_DAILY_LINK = "https://daily.example/files/acme/j/out.txt?sig=0"


def _daily_item(fmt: str, linked: bool) -> dict[str, Any]:
    key = f"acme/3ab8faa2/transcript/out.{fmt}"
    config = {"key": key, "bucket": "daily-prod-batch", "region": "us-west-2"}
    return {"format": fmt, "s3Config": config, **({"link": _DAILY_LINK} if linked else {})}


_daily_items = st.builds(_daily_item, st.sampled_from(["txt", "json", "vtt", "srt"]), st.booleans())
daily_records = st.fixed_dictionaries(
    {
        "id": _ids,
        "preset": st.sampled_from(["transcript", "summarize"]),
        "status": st.just("finished"),
        "input": st.one_of(
            st.fixed_dictionaries(
                {"sourceType": st.just("uri"), "uri": st.just("https://direct-url-to/file.mp4")}
            ),
            st.fixed_dictionaries({"sourceType": st.just("recordingId"), "recordingId": _ids}),
        ),
        "output": st.fixed_dictionaries(
            {"transcription": st.lists(_daily_items, min_size=1, max_size=3)},
            optional={"summary": _daily_items, "soap": _daily_items},
        ),
    },
    optional={"error": _text},
)

_loom_link = st.just("https://loom-files.s3.amazonaws.com/R1/x?X-Amz-Signature=1")
_loom_names = st.sampled_from(["media file name", "IME Doc Extraction.txt", "a.mp3", "b.docx"])
_loom_input = st.fixed_dictionaries(
    {
        "filename": _loom_names,
        "file_type": st.sampled_from(["audio", "attachment"]),
        "file_size": st.integers(0, 10**9),
        "download_url": _loom_link,
    }
)


def _loom_outputs(subtype: str, language: bool) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"filename": _loom_names, "file_subtype": st.just(subtype), "download_url": _loom_link},
        optional={"language_code": st.just("en")} if language else {},
    )


loom_records = st.fixed_dictionaries(
    {
        "success": st.just(True),
        "msg": st.just("SUCCESS: Job completed successfully."),
        "job_data": st.fixed_dictionaries(
            {
                "job_info": st.fixed_dictionaries(
                    {
                        "job_reference_id": st.just("R1"),
                        "job_name": st.sampled_from(
                            ["case-42", "calls/2024/jan.mp3", "<job_name>"]
                        ),
                        "status": st.just("completed"),
                        "profile_name": st.just("IME Doc Extraction"),
                        "submitted_at": st.just("2024-05-01 12:00:00"),
                        "completed_at": st.just("2024-05-01 12:30:00"),
                        "total_audio_length": st.just("1843"),
                        "is_blank_audio": st.booleans(),
                        "error_message": st.none(),
                    }
                ),
                "job_files": st.fixed_dictionaries(
                    {
                        "input_files": st.lists(_loom_input, max_size=2),
                        "output_files": st.fixed_dictionaries(
                            {
                                "transcripts": st.lists(
                                    _loom_outputs("final_transcript", True), max_size=3
                                ),
                                "processed_input_media": st.lists(
                                    _loom_outputs("merged_filename", False), max_size=1
                                ),
                                "extracted_fields_url": st.none() | _loom_link,
                            }
                        ),
                    }
                ),
            }
        ),
    }
)

_obs = st.fixed_dictionaries(
    {
        "bucket": st.just("out-bkt"),
        "location": st.just("cn-north-4"),
        "object": st.sampled_from(["out/ok", "src/ok.mp4", "out/thumbs/"]),
    },
    optional={"file_name": st.just("ok.mp4")},
)
_media = st.fixed_dictionaries(
    {"format": st.just("MP4"), "size": st.integers(0, 10**9), "duration": st.integers(0, 9999)}
)
mpc_records = st.fixed_dictionaries(
    {
        "task_id": st.integers(0, 10**9).map(str),
        "status": st.sampled_from(["SUCCEEDED", "FAILED", "CANCELED"]),
        "create_time": st.just("20240401001517"),
        "end_time": st.just("20240401002011"),
        "input": _obs,
        "output": _obs,
    },
    optional={
        "trans_template_id": st.just([7000523]),
        "output_file_name": st.lists(st.sampled_from(["ok_7000523.mp4", "ok/thumb.jpg"])),
        "user_data": st.sampled_from(["", "callback https://acme.example/hook", "x/y/z.json"]),
        "error_code": st.just(""),
        "description": _text,
        "tips": st.just(""),
        "output_url": st.just("https://out-bkt.obs.cn-north-4.myhuaweicloud.com/out/qc.json"),
        "transcode_detail": st.fixed_dictionaries(
            {
                "multitask_info": st.lists(
                    st.fixed_dictionaries(
                        {"template_id": st.just(7000523), "output_file": _media},
                        optional={"error": st.just({"error_code": "", "error_msg": ""})},
                    ),
                    max_size=2,
                )
            },
            optional={"input_file": _media},
        ),
        "thumbnail_output": _obs,
        "thumbnail_outputname": st.just("thumbs.zip"),
        "pic_info": st.lists(st.fixed_dictionaries({"pic_name": st.just("out/thumbs/1.jpg")})),
    },
)

unsiloed_answers = st.fixed_dictionaries(
    {
        "job": st.fixed_dictionaries(
            {
                "id": st.just("J"),
                "status": st.sampled_from(["completed", "COMPLETED"]),
                "type": st.just("extraction"),
                "created_at": _times,
                "updated_at": _times,
                "user_id": st.just("user_123"),
            },
            optional={
                "pdf_name": st.sampled_from(["invoice.pdf", "reports/q1.pdf"]),
                "pdf_hash": st.just("sha256:" + "ab" * 32),
            },
        ),
        "result_json": st.fixed_dictionaries(
            {
                "job_id": st.just("J"),
                "status": st.just("completed"),
                "file_url": st.just("https://u.s3.amazonaws.com/J/in.pdf?X-Amz-Expires=3600"),
                "metadata": st.fixed_dictionaries(
                    {"page_count": st.integers(1, 9)},
                    optional={
                        "order": st.just("page"),
                        "schema": st.just({"logo_url": {"type": "string"}}),
                    },
                ),
                "result": st.dictionaries(
                    st.sampled_from(["total", "logo_url", "website", "s3_key"]),
                    st.fixed_dictionaries(
                        {
                            "value": st.sampled_from(["12", "https://acme.example/l.png", "a/b.c"]),
                            "score": st.floats(0, 1),
                        }
                    ),
                    max_size=3,
                ),
            },
            optional={
                "file_name": st.sampled_from(["invoice.pdf", "in/q1.pdf"]),
                "created_at": _times,
                "updated_at": _times,
            },
        ),
    }
)

dato_tracks = st.fixed_dictionaries(
    {
        "type": st.just("upload_track"),
        "id": st.just("xBe7u01029ipxBLQ"),
        "attributes": st.fixed_dictionaries(
            {
                "type": st.sampled_from(["subtitles", "audio"]),
                "name": st.sampled_from(["Italiano", "en/US subtitles.vtt"]),
                "language_code": st.just("it-IT"),
                "closed_captions": st.none() | st.booleans(),
                "status": st.sampled_from(["ready", "errored"]),
                "error": st.none() | st.just("Mux could not read the file"),
            }
        ),
        "relationships": st.just({"upload": {"data": {"type": "upload", "id": "q0VNpiNQ"}}}),
    },
    optional={"links": st.just({"self": "https://site-api.datocms.com/uploads/q0/tracks/x"})},
)


def _daily_claimed(record: dict[str, Any]) -> set[Path]:
    claimed: set[Path] = set()
    for section, path, item in daily_adapter.items_of(record):
        if (
            section in daily_adapter.KNOWN_SECTIONS
            and isinstance(item, dict)
            and item.get("s3Config")
        ):
            claimed.update((*path, name) for name in ("s3Config", *daily_adapter.SAME_FILE))
    return claimed


@dataclass(frozen=True, repr=False)
class Walk:
    """One adapter's verdict on a record, and what the property needs to judge it."""

    name: str
    records: st.SearchStrategy[dict[str, Any]]
    verdict: Callable[[dict[str, Any], frozenset[str]], list[Path]]
    inert: Inert
    containers: tuple[Path, ...] = ()
    claimed: Callable[[dict[str, Any]], set[Path]] = lambda record: set()
    # Where the provider's answers are in the record (Unsiloed's two are side by side).
    answers: tuple[Path, ...] = ((),)

    def __repr__(self) -> str:
        return self.name


WALKS = [
    Walk(
        "daily",
        daily_records,
        daily_adapter.unrecognised_of,
        daily_adapter.INERT,
        (daily_adapter.OUTPUT,),
        _daily_claimed,
    ),
    Walk(
        "loom",
        loom_records,
        loom_adapter.unrecognised_of,
        loom_adapter.INERT,
        loom_adapter.CONTAINERS,
        lambda record: {file.path for file in loom_adapter.files_of(record)},
    ),
    Walk("huawei_mpc", mpc_records, mpc_adapter.unrecognised_of, mpc_adapter.INERT),
    Walk(
        "unsiloed",
        unsiloed_answers,
        lambda answers, ignored: unsiloed_adapter.unrecognised_of(
            answers["job"], answers["result_json"], ignored
        ),
        unsiloed_adapter.INERT,
        unsiloed_adapter.ANSWERS,
        lambda answers: {("result_json", "file_url")},
        unsiloed_adapter.ANSWERS,
    ),
    Walk(
        "datocms",
        dato_tracks,
        dato_adapter.unrecognised_of,
        dato_adapter.INERT,
        dato_adapter.ATTRIBUTES,
    ),
]
WALK_IDS = [w.name for w in WALKS]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.parametrize("walk", WALKS, ids=WALK_IDS)
@given(data=st.data())
def test_a_valid_record_of_each_provider_raises_no_false_alarm(
    walk: Walk, data: st.DataObject
) -> None:
    record = data.draw(walk.records)
    assert walk.verdict(record, frozenset()) == []


def _places(value: Any, path: Path, walk: Walk, claimed: set[Path]) -> list[Path]:
    """Every object and list a shape could be put in: not inside a field the adapter
    declares inert, nor inside a claimed one."""
    if not isinstance(value, dict | list):
        return []
    if is_inert(path, walk.inert) or any(within(path, c) for c in claimed):
        return []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    found = [path]
    for key, item in items:
        found.extend(_places(item, (*path, key), walk, claimed))
    return found


def _at(value: Any, path: Path) -> Any:
    for step in path:
        value = value[step]
    return value


WRAPPERS = ("details", "extra", "meta", "info", "more")


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.parametrize("walk", WALKS, ids=WALK_IDS)
@given(data=st.data())
def test_a_job_is_deleted_only_if_every_injected_reference_is_archived_or_ignored(
    walk: Walk, data: st.DataObject
) -> None:
    # given a valid record of the provider, and one shape put somewhere in it, at some depth
    record = data.draw(walk.records, label="record")
    claimed = walk.claimed(record)
    places = [p for a in walk.answers for p in _places(_at(record, a), a, walk, claimed)]
    target_path = data.draw(st.sampled_from(places), label="into")
    target = _at(record, target_path)
    shape = data.draw(any_shape, label="shape")
    fields = json.loads(json.dumps(shape.fields))
    wrappers = data.draw(
        st.lists(st.sampled_from(WRAPPERS) | st.just("[]"), max_size=3), label="wrapped in"
    )
    held: Any = fields
    inside: Path = ()
    for wrapper in reversed(wrappers):
        held = [held] if wrapper == "[]" else {wrapper: held}
        inside = (0, *inside) if wrapper == "[]" else (wrapper, *inside)
    if isinstance(target, list):
        holder = (*target_path, len(target))
        target.append(held)
    elif wrappers:
        # a new field holding the wrapped shape (a list wrapper needs a name to sit under)
        name = wrappers[0] if wrappers[0] != "[]" else "wrapped"
        assume(name not in target)
        target[name] = held
        holder = (*target_path, name)
    else:
        assume(not target.keys() & fields.keys())
        target.update(fields)
        holder = target_path
    injected = [(*holder, *inside, *steps) for steps in shape.steps()]
    assume(not any(is_inert(path, walk.inert) for path in injected))
    sections = {section_of(path, walk.containers) for path in injected}
    pool = sorted(sections | {"transcription", "input_files", "transcripts", "attributes"})
    ignored = frozenset(data.draw(st.sets(st.sampled_from(pool)), label="ignore_outputs"))

    # when the adapter judges it
    try:
        verdict = walk.verdict(record, ignored)
    except BadResponse:
        event("refused as malformed")
        return  # refused before anything is decided: nothing is deleted
    event("kept" if verdict else "deleted, all of it ignored or archived")

    # then it names nothing but what was injected (or what holds it)
    def related(path: Path) -> bool:
        return any(within(path, i) or within(i, path) for i in injected)

    assert all(related(p) for p in verdict), (verdict, injected)
    # and each injected reference is archived, ignored, or named: the job is kept for it
    claimed = walk.claimed(record)
    for path in injected:
        archived = any(within(path, c) for c in claimed)
        accepted = section_of(path, walk.containers) in ignored
        named = any(within(path, p) or within(p, path) for p in verdict)
        assert archived or accepted or named, (path, verdict, ignored)
    if verdict:
        message = str(unrecognised(verdict, containers=walk.containers))
        assert f"`{dotted(verdict[0])}`" in message
        assert SIGNATURE not in message
