"""The whole-record walk every adapter uses to fail closed, on plain data."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.errors import Kept
from worker.providers.outputs import (
    Path,
    dotted,
    references,
    section_of,
    unclaimed,
    unrecognised,
    within,
)

SIGNED = "https://bucket.s3.amazonaws.com/out.mp4?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA"


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
        "thumbnail_output",
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


def test_unclaimed_leaves_out_what_is_claimed_known_or_ignored() -> None:
    # given a record with four references
    record = {
        "input": {"uri": "https://user.example/in.mp4"},
        "output": {
            "transcription": [{"s3Config": {"key": "k", "bucket": "b"}}],
            "recording": [{"link": SIGNED}],
        },
        "extra_url": "https://x.example/e",
    }
    claimed = {("output", "transcription", 0, "s3Config")}
    known: tuple[Path, ...] = (("input",),)

    # when nothing is ignored, then the recording and the extra link are unclaimed
    found = unclaimed(record, claimed=claimed, known=known, containers=(("output",),))
    assert [dotted(p) for p in found] == ["output.recording[0].link", "extra_url"]

    # when the operator ignores the recording section, only the extra link is
    found = unclaimed(
        record, claimed=claimed, known=known, ignored={"recording"}, containers=(("output",),)
    )
    assert [dotted(p) for p in found] == ["extra_url"]


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
