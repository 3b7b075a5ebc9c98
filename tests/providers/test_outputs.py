"""The whole-record walk every adapter uses to fail closed, on plain data."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.providers.shapes import SHAPE_IDS, SHAPES, SIGNED, Shape
from worker.errors import Kept
from worker.json_types import JSONValue
from worker.providers.outputs import (
    Path,
    dotted,
    is_inert,
    references,
    section_of,
    unclaimed,
    unrecognised,
    within,
    words,
)
from worker.specs.inert import inert


def paths_in(value: Any) -> list[str]:
    return [dotted(path) for path, _value in references(value)]


def test_every_kind_of_file_reference_is_found_with_its_json_path() -> None:
    # given a record with one reference of each kind the walk knows
    record = {
        "id": "job-1",
        "poster": "https://cdn.example/poster.jpg",
        "backup": "s3://bucket/key.bin",
        "output": {
            "transcription": [{"format": "txt", "s3Config": {"key": "k", "bucket": "b"}}],
            "recording": [{"format": "mp4", "link": SIGNED}],
            "summary": {"format": "txt", "url": "relative/summary.txt"},
        },
        "job_files": {"captions": [{"filename": "a.vtt", "download_url": "files/a.vtt"}]},
        "downloadUrl": "https://x.example/a",
        "thumbnail_output": {"bucket": "obs-out", "location": "cn-north-4", "object": "t/"},
        "output_files": [{"filename": "no-link.mp4"}, "bare-name.mp4"],
        "visualization_paths": ["/tmp/page1.png"],
        "file_path": "/srv/x.pdf",
        "links": ["https://a.example/1", "https://a.example/2"],
    }

    # when it is walked, then each is found where it is, in document order
    assert paths_in(record) == [
        "poster",
        "backup",
        "output.transcription[0].s3Config",
        "output.recording[0].link",
        "output.summary.url",
        "job_files.captions[0].download_url",
        "downloadUrl",
        "thumbnail_output.bucket",
        "thumbnail_output.location",
        "thumbnail_output.object",
        "output_files[0]",
        "output_files[1]",
        "visualization_paths[0]",
        "file_path",
        "links[0]",
        "links[1]",
    ]


def test_text_that_only_mentions_a_url_and_empty_values_are_not_references() -> None:
    record: dict[str, Any] = {
        "error": "Failed to download https://example.com/in.mp4: 403",
        "download_url": None,
        "link": "",
        "urls": [],
        "thumbnail_url": {},
        "has_url": False,
        "url_count": 3,
        "filename": "a.mp3",
        "pdf_name": "b.pdf",
        "pdf_hash": "sha256:" + "a" * 64,
        "status": "finished",
        "nested": [{"x": 1}, None, "plain"],
    }
    assert paths_in(record) == []


def test_a_reference_is_not_walked_into() -> None:
    # an s3Config is one reference, even though it holds a bucket and a key of its own
    record = {"s3Config": {"key": "a", "bucket": "b", "mirror_url": "https://m.example/a"}}
    assert paths_in(record) == ["s3Config"]


def test_an_object_under_a_name_for_data_is_one_reference_when_nothing_inside_is() -> None:
    # an id, which only the vendor can resolve, still names the file; a number names nothing
    record = {
        "audio_file": {"id": "f-1", "size": 3},
        "download_url": {"expires": 3600},
        "summary_links": [{"count": 2}, None, 7],
    }
    assert paths_in(record) == ["audio_file"]


def test_an_object_under_a_plural_name_is_a_container_of_fields_judged_one_by_one() -> None:
    record = {
        "output_files": {
            "transcripts": [],
            "extracted_fields_url": None,
            "captions": [{"filename": "a.vtt", "language": "en"}],
            "captions_url": "c-1",
        }
    }
    assert paths_in(record) == ["output_files.captions_url"]


def test_a_bare_url_string_or_a_list_of_them_is_a_reference() -> None:
    assert paths_in(SIGNED) == ["(the whole record)"]
    assert paths_in(["x", "HTTPS://A.EXAMPLE/b"]) == ["[1]"]


def test_paths_are_written_as_people_write_them() -> None:
    assert dotted(("output", "recording", 0)) == "output.recording[0]"
    assert dotted(("job_data", "job_files", "output_files", "captions", 1, "download_url")) == (
        "job_data.job_files.output_files.captions[1].download_url"
    )
    assert dotted(("odd key", "x.y", 2)) == '["odd key"]["x.y"][2]'
    assert dotted(()) == "(the whole record)"


def test_a_section_is_the_key_under_the_deepest_container_else_the_top_level_key() -> None:
    containers: tuple[Path, ...] = (("a", "b", "c"), ("a", "b"))
    assert section_of(("a", "b", "c", "captions", 0), containers) == "captions"
    assert section_of(("a", "b", "input_files", 0), containers) == "input_files"
    assert section_of(("other", "x"), containers) == "other"
    assert section_of(("a", "b", "c"), containers) == "c"
    assert within(("a", "b", 1), ("a", "b"))
    assert not within(("a", "bb"), ("a", "b"))


def test_unclaimed_leaves_out_what_is_claimed_inert_or_ignored() -> None:
    # given a record with four references
    record: JSONValue = {
        "input": {"uri": "https://user.example/in.mp4"},
        "output": {
            "transcription": [{"s3Config": {"key": "k", "bucket": "b"}}],
            "recording": [{"link": SIGNED}],
        },
        "extra_url": "https://x.example/e",
    }
    claimed = {("output", "transcription", 0, "s3Config")}
    table = inert({"input.uri": "what the user submitted"})

    # when nothing is ignored, then the recording and the extra link are unclaimed
    found = unclaimed(record, claimed=claimed, inert=table, containers=(("output",),))
    assert [dotted(p) for p in found] == ["output.recording[0].link", "extra_url"]

    # when the operator ignores the recording section, only the extra link is
    found = unclaimed(
        record, claimed=claimed, inert=table, ignored={"recording"}, containers=(("output",),)
    )
    assert [dotted(p) for p in found] == ["extra_url"]


def test_a_claimed_field_claims_what_lies_inside_it_and_nothing_beside_it() -> None:
    record: JSONValue = {"item": {"files": ["a/b.txt", "c/d.txt"], "key": "e/f.txt"}}
    found = unclaimed(record, claimed={("item", "files")})
    assert [dotted(p) for p in found] == ["item.key"]


def test_an_inert_pattern_covers_its_field_and_what_lies_inside_it() -> None:
    # given a declaration with a wildcard key, a wildcard index and a fixed index
    table = inert(
        {
            "output.*[*].format": "a file type",
            "output.*.format": "a file type",
            "input": "what the user submitted",
            "pages[0].url": "the first page is the user's",
        }
    )

    # then each pattern matches its field and below, and nothing beside it
    assert is_inert(("output", "transcription", 3, "format"), table)
    assert is_inert(("output", "summary", "format"), table)
    assert is_inert(("input", "uri"), table)
    assert is_inert(("input", "nested", 0, "x"), table)
    assert is_inert(("pages", 0, "url"), table)
    assert not is_inert(("pages", 1, "url"), table)
    assert not is_inert(("output", "transcription", 3, "link"), table)
    assert not is_inert(("output", "transcription", "x", "format"), table)
    assert not is_inert(("output",), table)
    assert not is_inert(("inputs",), table)
    assert not is_inert(("extra", "input"), table)


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"*.url": "anything"}, "must start with a field name"),
        ({"[*].url": "anything"}, "must start with a field name"),
        ({"output..format": "a type"}, "is not a path pattern"),
        ({"": "nothing"}, "is not a path pattern"),
        ({"output[x]": "bad index"}, "is not a path pattern"),
        ({"output.format": "  "}, "needs a reason"),
    ],
)
def test_a_declaration_that_could_hide_everything_or_says_nothing_is_refused(
    table: dict[str, str], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        inert(table)


def test_a_declared_table_cannot_be_changed_afterwards() -> None:
    table = inert({"id": "the job's id"})
    with pytest.raises(TypeError):
        table["output"] = "everything"  # type: ignore[index]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("audio_file", ("audio", "file")),
        ("audioFile", ("audio", "file")),
        ("audio-file", ("audio", "file")),
        ("recording_s3_key", ("recording", "s", "3", "key")),
        ("s3Key", ("s", "3", "key")),
        ("downloadURLs", ("download", "urls")),
        ("HREF", ("href",)),
        ("BucketName", ("bucket", "name")),
        ("profile", ("profile",)),
    ],
)
def test_field_names_are_read_as_words_whatever_their_casing(
    name: str, expected: tuple[str, ...]
) -> None:
    assert words(name) == expected


def test_the_kept_error_names_paths_and_sections_but_never_a_value() -> None:
    # given seven references nobody claimed, one of them a signed link
    paths: list[Path] = [("output", "recording", i) for i in range(6)]
    paths.append(("poster_url",))

    # when the error is built and attached to a job
    error = unrecognised(paths, containers=(("output",),)).for_job("daily", "job-9")

    # then it keeps the job, names the first paths and the sections to ignore, and no value
    assert isinstance(error, Kept)
    assert error.reason == "unrecognised_output"
    assert not error.permanent
    text = str(error)
    assert text.startswith("daily job job-9: unrecognised outputs `output.recording[0]`")
    assert "and 2 more: nothing deleted" in text
    assert '"recording", "poster_url" to ignore_outputs' in text
    assert "X-Amz" not in text
    assert "https" not in text


def test_one_unrecognised_output_reads_in_the_singular() -> None:
    error = unrecognised([("output", "recording", 0)], containers=(("output",),))
    assert error.message == "unrecognised output `output.recording[0]`: nothing deleted"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["https://a.example/x", "s3://b/k", " http://c", "ftp://d/e"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "url",
                    "download_url",
                    "link",
                    "s3Config",
                    "bucket",
                    "key",
                    "object",
                    "files",
                    "output_file_name",
                    "file_path",
                    "name",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=40,
)


def _at(value: Any, path: Path) -> Any:
    for segment in path:
        value = value[segment]
    return value


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(record=json_values)
def test_any_json_walks_to_paths_that_hold_what_was_found(record: Any) -> None:
    # given any JSON value, when it is walked
    found = list(references(record))

    # then every path leads to the value yielded, and no reference is empty
    for path, value in found:
        assert _at(record, path) is value
        assert value not in (None, "", [], {})
        assert not isinstance(value, bool | int | float)
    # and no two references are the same place, and none lies inside another
    paths = [path for path, _value in found]
    assert len(set(paths)) == len(paths)
    for one in paths:
        assert not any(one != other and within(one, other) for other in paths)
    # and every URL string in the value is inside some reference
    for path in _url_strings(record):
        assert any(within(path, ref) for ref in paths)


_URLISH = re.compile(r"^\s*(?:https?|s3|ftp)://\S", re.IGNORECASE)


def _url_strings(value: Any, path: Path = ()) -> list[Path]:
    if isinstance(value, str):
        return [path] if _URLISH.match(value) else []
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _url_strings(v, (*path, i))]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _url_strings(v, (*path, k))]
    return []


# -- every shape of reference -------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_each_shape_of_reference_is_found_at_the_top_level(shape: Shape) -> None:
    record = {"id": "job-1", "status": "finished", **shape.fields}
    assert paths_in(record) == shape.under("")


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_each_shape_of_reference_is_found_inside_an_output_item(shape: Shape) -> None:
    # given the shape beside a claimed s3Config, in an item of a list, three levels down
    item = {"format": "txt", "s3Config": {"key": "k", "bucket": "b"}, **shape.fields}
    record = {"id": "job-1", "output": {"transcription": [item]}}

    # when it is walked, then it is found beside the s3Config
    assert paths_in(record) == [
        "output.transcription[0].s3Config",
        *shape.under("output.transcription[0]"),
    ]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_each_shape_of_reference_is_found_deep_in_lists_and_objects(shape: Shape) -> None:
    record = {"meta": [{"details": {"extra": [shape.fields]}}]}
    assert paths_in(record) == shape.under("meta[0].details.extra[0]")


@pytest.mark.parametrize(
    "fields",
    [
        {"mime_type": "video/mp4"},
        {"content_type": "application/vnd.api+json"},
        {"language_code": "it-IT"},
        {"created_at": "2024-01-15T10:30:00.000Z"},
        {"date": "2024/05/01"},
        {"ratio": "1/2", "unknown": "N/A", "either": "and/or", "io": "I/O"},
        {"accept": "audio/mpeg", "kind": "Video/MP4"},
        {"error": "Failed to download /tmp/in.mp4: 403 Forbidden"},
        {"status": "finished", "format": "txt", "preset": "transcript"},
        {"job_id": "3ab8faa2-8ba2-4ee6-bd15-003a92c18245", "recordingId": "uuid-1"},
        {"file_type": "audio", "file_size": 12, "file_subtype": "final_transcript"},
        {"profile": "General", "profiles": ["a", "b"], "allocation": "x", "monkey": "y"},
        {"region": "us-west-2", "bucket_region": "us-west-2"},
        {"object": "charge", "name": "Italiano", "type": "subtitles"},
        {"is_file": True, "has_key": False, "key_count": 3, "keys": []},
        {"pdf_hash": "sha256:" + "a" * 64, "note": "see s3://b/k for details"},
    ],
    ids=",".join,
)
def test_what_names_no_stored_data_is_not_a_reference(fields: dict[str, Any]) -> None:
    assert paths_in({"id": "job-1", **fields}) == []
