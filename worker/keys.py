"""Archive keys: where a job's files live, and how a provider's names are made safe.

A provider chooses file names and job ids; we choose where they land. Every name is
normalised to a key strictly inside the job's folder, or the job is refused with
``UnsafeInput``. Nothing here guesses: a name that needs more than trimming slashes to be
safe is refused, because a silently renamed file is a file the user cannot find.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from worker.errors import UnsafeInput

# S3's own limit on a key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
# Most filesystems refuse a longer path segment; a restore to disk must not fail on one.
MAX_SEGMENT_BYTES = 255
MANIFEST_NAME = "manifest.json"
RECEIPT_NAME = "deletion.json"
# The ledger's jobs.job_id column holds this many characters.
MAX_JOB_ID = 512
RESERVED_NAMES = frozenset({MANIFEST_NAME, RECEIPT_NAME})
# A job archived again after it changed at the provider gets manifest.2.json, manifest.3.json
# beside the first: a provider's file may not take any of these names either.
_MANIFEST = re.compile(r"manifest(?:\.([2-9]|[1-9][0-9]+))?\.json")

# C0 and C1 controls, DEL, and the bidirectional overrides that make a name display as
# something other than what it is ("trojan source").
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\\\\]")


def safe_relative_key(name: str, *, what: str = "file name") -> str:
    """Normalise ``name`` to a relative key, or raise ``UnsafeInput``.

    Leading, trailing and doubled slashes are dropped (an absolute path lands inside the job
    folder). ``.`` and ``..`` segments, control characters, backslashes and overlong
    segments are refused.
    """
    text = unicodedata.normalize("NFC", name)
    if _FORBIDDEN.search(text):
        raise UnsafeInput(
            f"the provider's {what} {text!r} contains a control character or backslash",
            hint="The job was refused; check the job at the provider",
        )
    segments = [s for s in text.split("/") if s]
    if not segments:
        raise UnsafeInput(f"the provider's {what} {text!r} is empty")
    for segment in segments:
        if segment in (".", ".."):
            raise UnsafeInput(
                f"the provider's {what} {text!r} contains a {segment!r} segment",
                hint="The job was refused so nothing is written outside its folder",
            )
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise UnsafeInput(
                f"the provider's {what} has a segment longer than {MAX_SEGMENT_BYTES} bytes"
            )
    return "/".join(segments)


def job_id_problem(job_id: str, *, segments: int = 1) -> str | None:
    """Why ``job_id`` cannot be tracked as given, or None. A tracked id is the name of its
    job's folder in the archive, so it must be one as it stands: ``segments`` segments that
    ``safe_relative_key`` keeps unchanged (no slash to trim, no '..', no control character),
    in Unicode's composed form, with nothing around it. Then two ids never share a folder, and
    no job's folder holds another's (``R1`` and ``R1/x`` would). What an adapter checks
    further (``BaseProvider.job_id_problem``) comes on top of this."""
    if not job_id:
        return "is empty"
    if len(job_id) > MAX_JOB_ID:
        return f"is longer than {MAX_JOB_ID} characters"
    if job_id != job_id.strip():
        return "has spaces at its start or end"
    if unicodedata.normalize("NFC", job_id) != job_id:
        return "is not in Unicode's composed form (NFC)"
    try:
        kept = safe_relative_key(job_id, what="job id")
    except UnsafeInput as exc:
        # "the provider's job id 'x' contains ...": the caller names the id and its provider.
        return exc.message.split(f"job id {job_id!r} ", 1)[-1].removeprefix(
            "the provider's job id "
        )
    if kept != job_id:
        return "has a '/' at its start or end, or two together"
    if kept.count("/") + 1 != segments:
        return "contains a '/'" if segments == 1 else f"is not {segments} parts joined by '/'"
    return None


def job_folder(prefix: str, provider: str, job_id: str) -> str:
    """``{prefix}{provider}/{job_id}/``: everything about one job lives under it."""
    return f"{prefix}{provider}/{safe_relative_key(job_id, what='job id')}/"


def archive_keys(folder: str, names: Iterable[str]) -> list[str]:
    """Map each provider name to its full key under ``folder``, refusing collisions.

    Two names that normalise to the same key would overwrite each other, and a name equal
    to our own manifest or receipt would be overwritten by them: both refuse the job.
    """
    keys: list[str] = []
    seen: dict[str, str] = {}
    for name in names:
        relative = safe_relative_key(name)
        if relative in RESERVED_NAMES or _MANIFEST.fullmatch(relative):
            raise UnsafeInput(
                f"the provider's file name {name!r} collides with the worker's own {relative}"
            )
        key = folder + relative
        if len(key.encode()) > MAX_KEY_BYTES:
            raise UnsafeInput(
                f"the archive key for {name!r} would be longer than S3's {MAX_KEY_BYTES} bytes",
                hint="Shorten [archive].prefix or archive this job by hand",
            )
        if key in seen:
            raise UnsafeInput(
                f"the provider's file names {seen[key]!r} and {name!r} map to the same key",
                hint="The job was refused so neither file overwrites the other",
            )
        seen[key] = name
        keys.append(key)
    return keys


def manifest_key_for(folder: str, revision: int) -> str:
    """The manifest of the job's ``revision``-th archive: ``manifest.json`` for the first,
    ``manifest.N.json`` for each later one, beside the earlier ones."""
    return folder + (MANIFEST_NAME if revision <= 1 else f"manifest.{revision}.json")


def manifest_revision(key: str) -> int | None:
    """Which archive of its job the manifest at ``key`` records; None for another key."""
    match = _MANIFEST.fullmatch(key.rsplit("/", 1)[-1])
    if match is None:
        return None
    return int(match.group(1) or 1)


def revision_key(folder: str, revision: int, name: str) -> str:
    """Where a file that changed at the provider since an earlier archive is stored by the
    ``revision``-th: never over the earlier copy, which its manifest still lists."""
    return archive_keys(folder, [f"rev-{revision}/{name}"])[0]


def receipt_key_for(manifest_key: str) -> str:
    """The deletion receipt beside a job's manifest, whichever revision it is."""
    return manifest_key.rsplit("/", 1)[0] + "/" + RECEIPT_NAME


def strip_query(url: str) -> str:
    """A URL without its query string and fragment: what is safe to log and to record.

    Signed links carry their signature in the query (X-Amz-Signature, Signature, token...),
    and credentials in the user part, which is dropped too. An IPv6 host keeps its brackets.
    A URL that does not parse (urlsplit checks the port only when it is read) is shown as
    ``<unparseable url>``: this never raises.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
