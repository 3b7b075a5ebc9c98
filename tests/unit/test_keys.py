"""Provider-supplied names become keys inside the job's folder, or the job is refused."""

from __future__ import annotations

import pytest

from worker.errors import UnsafeInput
from worker.keys import archive_keys, job_folder, safe_relative_key, strip_query

FOLDER = "archive/daily/job-1/"


def test_an_ordinary_key_is_kept_as_the_provider_wrote_it() -> None:
    assert safe_relative_key("acme/job-1/transcript/out.json") == "acme/job-1/transcript/out.json"


@pytest.mark.parametrize("name", ["/etc/passwd", "//a//b/", "a/b/"])
def test_absolute_and_doubled_slashes_land_inside_the_folder(name: str) -> None:
    key = archive_keys(FOLDER, [name])[0]
    assert key.startswith(FOLDER)
    assert "//" not in key


@pytest.mark.parametrize(
    "name",
    [
        "../escape.txt",
        "a/../../b",
        "./a",
        "a/./b",
        "a\\..\\b",
        "tab\there",
        "nul\x00",
        "del\x7f",
        "bidi\u202eexe.txt",
        "",
    ],
)
def test_unsafe_names_refuse_the_job(name: str) -> None:
    with pytest.raises(UnsafeInput):
        archive_keys(FOLDER, [name])


def test_an_overlong_segment_is_refused() -> None:
    with pytest.raises(UnsafeInput, match="longer than 255"):
        safe_relative_key("a/" + "x" * 256)


def test_a_key_longer_than_s3_allows_is_refused() -> None:
    name = "/".join(["y" * 200] * 6)
    with pytest.raises(UnsafeInput, match="1024"):
        archive_keys(FOLDER, [name])


def test_two_names_that_map_to_one_key_refuse_the_job() -> None:
    with pytest.raises(UnsafeInput, match="same key"):
        archive_keys(FOLDER, ["a/b.txt", "/a//b.txt"])


@pytest.mark.parametrize("name", ["manifest.json", "/deletion.json"])
def test_a_name_that_collides_with_our_own_documents_is_refused(name: str) -> None:
    with pytest.raises(UnsafeInput, match="collides"):
        archive_keys(FOLDER, [name])


def test_the_same_name_in_a_subfolder_is_fine() -> None:
    assert archive_keys(FOLDER, ["sub/manifest.json"]) == [FOLDER + "sub/manifest.json"]


def test_unicode_is_normalised_so_lookalikes_collide_rather_than_coexist() -> None:
    with pytest.raises(UnsafeInput, match="same key"):
        archive_keys(FOLDER, ["caf\u00e9.txt", "cafe\u0301.txt"])


def test_job_ids_are_held_to_the_same_rules() -> None:
    assert job_folder("archive/", "daily", "abc") == "archive/daily/abc/"
    assert job_folder("", "datocms", "UP/TRACK") == "datocms/UP/TRACK/"
    with pytest.raises(UnsafeInput):
        job_folder("archive/", "daily", "../other")


def test_strip_query_drops_signatures_and_credentials() -> None:
    url = "https://user:pw@bucket.s3.amazonaws.com:443/a/b.txt?X-Amz-Signature=abc#frag"
    assert strip_query(url) == "https://bucket.s3.amazonaws.com:443/a/b.txt"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # an IPv6 host keeps its brackets, or its last group would read as the port
        ("https://[2001:db8::1]:8443/out.mp4?sig=abc", "https://[2001:db8::1]:8443/out.mp4"),
        ("https://[::1]/a?token=t", "https://[::1]/a"),
        ("http://example.com:0/x?k=v", "http://example.com:0/x"),
    ],
)
def test_strip_query_keeps_a_host_and_port_that_read_back_the_same(url: str, shown: str) -> None:
    assert strip_query(url) == shown


@pytest.mark.parametrize(
    "url",
    ["https://h.example:99999/a?sig=abc", "https://h.example:port/a?sig=abc", "https://[::1/a"],
)
def test_strip_query_never_raises_and_never_shows_the_query_of_a_bad_url(url: str) -> None:
    shown = strip_query(url)
    assert "sig" not in shown
    assert shown == "<unparseable url>"
