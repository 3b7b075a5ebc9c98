"""The errors the worker raises, and whether a job should be tried again.

Every error carries the retry decision with it. ``permanent=False`` means "defer the job and
try again on a later sweep"; ``permanent=True`` means "mark the job failed and wait for a
person". Either way nothing is deleted: the delete gate (``delete_job``) only opens for a job
whose archive is complete.

    WorkerError
    ├── ConfigError ............ the configuration is wrong (always permanent; exit code 2)
    ├── ProviderError .......... the provider's API did not give us what we needed
    │   ├── ProviderUnavailable  5xx, timeouts, reset connections (transient)
    │   ├── RateLimited ........ 429; carries the wait the provider asked for (transient)
    │   ├── ProviderRejected ... 4xx such as a bad key or a refused operation (permanent)
    │   ├── BadResponse ........ malformed JSON, missing fields, unknown shapes (transient)
    │   ├── DeleteIncomplete ... the provider answered the delete but says something was not
    │   │                        deleted: the job stays DELETING and the delete is sent again
    │   └── DeleteFailed ....... an asynchronous delete finished unsuccessfully: its handle is
    │                            spent, and the next attempt sends a new delete
    ├── Kept ................... the worker cannot prove it holds everything the delete would
    │                            destroy (an output it does not recognise, a source it cannot
    │                            fetch), or a policy keeps the job: it stays at the provider
    ├── DownloadError .......... a file download broke or came back short (transient)
    ├── ArchiveError ........... S3 refused or failed a write or a read (transient)
    │   └── VerifyError ........ a stored object does not match what was streamed (transient)
    ├── UnsafeInput ............ a provider handed us a path or URL we refuse to use (permanent)
    ├── TrackRefused ........... job ids handed in to be tracked were refused (an unknown
    │                            provider, an id its adapter cannot have): nothing was recorded
    ├── LedgerError ............ the ledger refused a transition (transient)
    ├── StoreUnavailable ....... a store every job needs could not be used (transient): the
    │   │                        jobs after this one would meet the same, so a sweep stops
    │   │                        dispatching, and a command exits 3
    │   ├── LedgerUnavailable .. the ledger's database could not be reached or opened
    │   └── RedisUnavailable ... Redis, which holds the sweep leases and the shared rate
    │                            limits, could not be reached
    └── BrakeEngaged ........... the sweep's delete budget (max_deletes_per_sweep) is spent:
                                 the job stays archived and a later sweep deletes it

Messages name the provider and the job, say what happened and what to do about it, and never
contain a credential or a signed URL: ``str(error)`` is what reaches logs and the CLI.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""

    permanent: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        job_id: str | None = None,
        hint: str | None = None,
        permanent: bool | None = None,
    ) -> None:
        self.message = message
        self.provider = provider
        self.job_id = job_id
        self.hint = hint
        if permanent is not None:
            self.permanent = permanent
        super().__init__(self.describe())

    def describe(self) -> str:
        where = ""
        if self.provider and self.job_id:
            where = f"{self.provider} job {self.job_id}: "
        elif self.provider:
            where = f"{self.provider}: "
        text = f"{where}{self.message}"
        if self.hint:
            text = f"{text}. {self.hint}"
        return text

    def for_job(self, provider: str, job_id: str | None = None) -> WorkerError:
        """Attach the provider (and the job) when the raiser did not know them."""
        if self.provider is None:
            self.provider = provider
        if self.job_id is None:
            self.job_id = job_id
        self.args = (self.describe(),)
        return self

    def __str__(self) -> str:
        return self.describe()


class ConfigError(WorkerError):
    permanent = True


class ProviderError(WorkerError):
    pass


class ProviderUnavailable(ProviderError):
    pass


class RateLimited(ProviderError):
    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        provider: str | None = None,
        job_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, provider=provider, job_id=job_id, hint=hint)


class ProviderRejected(ProviderError):
    permanent = True


class BadResponse(ProviderError):
    pass


class DeleteFailed(ProviderError):
    """An asynchronous delete the provider finished, unsuccessfully: its handle is spent."""


class DeleteIncomplete(ProviderError):
    """The provider answered the delete, but its answer says part of the job was not deleted
    (Loom's "... not deleted", Daily's ``error`` on a delete). A partial delete is not a
    delete: the job stays DELETING, the delete is sent again later, and it is reported."""


class Kept(WorkerError):
    """The job stays at the provider on purpose, and ``reason`` says why in one word.

    Raised by an adapter when the delete would destroy something the worker cannot archive
    or does not recognise. Never a delete; the job is looked at again later (a configuration
    change such as ``ignore_outputs`` takes effect then). The reasons:

    * ``unrecognised_output``: the job's record names a file the adapter does not know;
    * ``no_output``: a finished job lists no output at all, and its status does not say why;
    * ``failed_job``: a failed job whose inputs the delete would destroy and the worker
      cannot fetch (Unsiloed), unless the operator opted in to deleting such jobs;
    * ``no_source``: a completed job whose result links no source document, which the
      delete would destroy (Unsiloed), unless the operator accepts losing it;
    * ``audio_track``: an audio track, whose media the worker cannot archive (DatoCMS),
      unless the operator accepts losing it;
    * ``subtitles_unfetchable``: a subtitle track whose WebVTT text cannot be fetched, and
      ``subtitles_invalid``: one whose text is empty or not WebVTT (DatoCMS), unless the
      operator accepts losing subtitle text.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        provider: str | None = None,
        job_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = reason
        super().__init__(message, provider=provider, job_id=job_id, hint=hint)


class DownloadError(WorkerError):
    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        provider: str | None = None,
        job_id: str | None = None,
        hint: str | None = None,
        permanent: bool | None = None,
    ) -> None:
        # The HTTP status the download host refused the download with, if it answered one.
        self.status_code = status_code
        super().__init__(message, provider=provider, job_id=job_id, hint=hint, permanent=permanent)


class ArchiveError(WorkerError):
    pass


class VerifyError(ArchiveError):
    pass


class UnsafeInput(WorkerError):
    permanent = True


class TrackRefused(WorkerError):
    """What `retention track`, the ``retention.track`` task or ``worker.client.track`` was
    handed cannot be recorded: every problem is named, and nothing at all was recorded, so
    sending the corrected request again is safe. Not retried: the same request fails the same
    way. Its name and message are all a Celery client sees of it (``TrackRefused`` with the
    message), so the message says everything."""

    permanent = True


class LedgerError(WorkerError):
    pass


class StoreUnavailable(WorkerError):
    """A store every job needs (the ledger, or Redis) could not be used. Not the job's
    fault, nor the provider's: the message names the store and where it is (never its
    password), and a later run succeeds once it is back."""


class LedgerUnavailable(StoreUnavailable):
    """The ledger's database could not be reached or opened (SQLAlchemy's OperationalError,
    InterfaceError, a dropped connection). Not a ``LedgerError``: that one means a transition
    was refused (a claim another worker holds), which a job reports as busy."""


class RedisUnavailable(StoreUnavailable):
    """Redis could not be reached (redis-py's ConnectionError or TimeoutError). The sweep
    leases and the shared rate limits live there once ``[broker] url`` names it: without it,
    a sweep cannot prove it is the only one, nor a request that it keeps to the limit."""


class BrakeEngaged(WorkerError):
    """The sweep started as many deletes as ``max_deletes_per_sweep`` allows. Not a failure:
    the job stays archived, untouched, and the next sweep takes it up."""
