"""The S3 datastore (AWS or any S3-compatible endpoint).

Imports only the standard library at import time: boto3 is imported when the first client is built,
so the step runtime can ship this file into images that only have python3 (+ boto3 when S3 is used).
"""

from __future__ import annotations

import os
import pathlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from airflow_mlpipe.errors import NotFoundError, WorkspaceError
from airflow_mlpipe.workspace.datastore import (
    MB,
    Datastore,
    ObjectInfo,
    Progress,
    _dumps,
    _loads,
    check_key,
    check_prefix,
    write_file_atomically,
)

__all__ = ["S3Datastore"]



def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code", ""))
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code or str(status or "")


_MISSING_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}
#: answers no retry changes: the connection's credentials or bucket must be fixed
_REFUSED_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "AllAccessDisabled",
                  "InvalidBucketName"}


class S3Datastore(Datastore):
    """An S3 prefix (AWS or any S3-compatible endpoint). boto3 is imported when first used."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        region_name: str | None = None,
        max_concurrency: int = 10,
        multipart_threshold: int = 8 * MB,
        multipart_chunksize: int = 8 * MB,
        max_attempts: int = 5,
    ):
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid S3 bucket name {bucket!r}")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.bucket = bucket
        self.prefix = check_prefix(prefix.strip("/")) if prefix else ""
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self.max_concurrency = max_concurrency
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self.max_attempts = max_attempts
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        # Kept private and never logged or shown in repr.
        self.__credentials = {
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
        }
        self._client: Any = None
        self._lock = threading.Lock()

    # -- plumbing
    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise WorkspaceError("the S3 datastore needs boto3: pip install boto3", permanent=True) from exc
        options: dict[str, Any] = {
            "retries": {"total_max_attempts": self.max_attempts, "mode": "standard"},  # total, first try included
            "max_pool_connections": max(10, 2 * self.max_concurrency + 2),
        }
        if self.endpoint_url:  # S3-compatible stores often reject boto3's default checksums
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
        session = boto3.session.Session(region_name=self.region_name, **{k: v for k, v in self.__credentials.items() if v})
        return session.client("s3", endpoint_url=self.endpoint_url, config=Config(**options))

    def _transfer_config(self, chunksize: int | None = None) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=chunksize or self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
            use_threads=True,
        )

    def _k(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _p(self, prefix: str) -> str:
        """The S3 prefix (with a trailing '/', or '' for the bucket root) of a datastore prefix."""
        prefix = check_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix and prefix else (self.prefix or prefix)
        return f"{full}/" if full else ""

    def _rel(self, s3_key: str) -> str:
        return s3_key[len(self.prefix) + 1 :] if self.prefix else s3_key

    def _boto_errors(self) -> tuple[type[BaseException], ...]:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        return (ClientError, BotoCoreError, Boto3Error)

    def _fail(self, action: str, key: str, exc: BaseException) -> WorkspaceError:
        code = _error_code(exc)
        where = self.uri_for(key) if key else self.uri
        if code in _MISSING_CODES:
            if code == "NoSuchBucket":
                return NotFoundError(f"bucket {self.bucket!r} does not exist ({where}); create it or fix the workspace URI")
            return NotFoundError(f"{where} does not exist")
        if code in _REFUSED_CODES:
            return WorkspaceError(f"cannot {action} {where}: {exc}; fix the credentials or the workspace URI of the "
                                  "mlpipe connection", permanent=True)
        return WorkspaceError(f"cannot {action} {where}: {exc}")

    # -- objects
    def read_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"].read()
        except self._boto_errors() as exc:
            raise self._fail("read", key, exc) from exc

    def open(self, key: str) -> Any:
        """The GET's streaming body (read it in chunks; closed on leaving the ``with``)."""
        import contextlib

        try:
            return contextlib.closing(self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"])
        except self._boto_errors() as exc:
            raise self._fail("read", key, exc) from exc

    def fingerprint(self, key: str) -> list | None:
        """[size, ETag] of the object ``key`` (one HEAD), as a listing gives them."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._k(key))
        except self._boto_errors() as exc:
            raise self._fail("read", key, exc) from exc
        return [int(head["ContentLength"]), head.get("ETag")]

    def write_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)
        except self._boto_errors() as exc:
            raise self._fail("write", key, exc) from exc

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._k(key))
            return True
        except self._boto_errors() as exc:
            if _error_code(exc) in _MISSING_CODES - {"NoSuchBucket"}:
                return False
            raise self._fail("check", key, exc) from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._k(key))
        except self._boto_errors() as exc:
            raise self._fail("delete", key, exc) from exc

    def _pages(self, prefix: str, delimiter: str | None = None) -> Iterator[dict]:
        kwargs = {"Bucket": self.bucket, "Prefix": self._p(prefix)}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        try:
            yield from self.client.get_paginator("list_objects_v2").paginate(**kwargs)
        except self._boto_errors() as exc:
            raise self._fail("list", prefix, exc) from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for page in self._pages(prefix):
            for obj in page.get("Contents", ()):
                modified = obj.get("LastModified")
                yield ObjectInfo(self._rel(obj["Key"]), int(obj["Size"]), modified.timestamp() if modified else None,
                                 obj.get("ETag"))

    def multipart_uploads(self, prefix: str) -> Iterator[tuple[str, str, float | None]]:
        """(key, upload id, initiated epoch seconds) of each multipart upload still open under ``prefix``."""
        kwargs = {"Bucket": self.bucket, "Prefix": self._p(prefix)}
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(**kwargs):
                for upload in page.get("Uploads", ()):
                    started = upload.get("Initiated")
                    yield self._rel(upload["Key"]), upload["UploadId"], started.timestamp() if started else None
        except self._boto_errors() as exc:
            raise self._fail("list the multipart uploads under", prefix, exc) from exc

    def abort_multipart_uploads(self, prefix: str, older_than: float | None = None) -> int:
        """Abort the multipart uploads open under ``prefix`` (only those started more than ``older_than``
        seconds ago, when given): a killed writer leaves its parts billed and invisible otherwise.
        Returns how many were aborted."""
        import time

        aborted = 0
        for key, upload_id, started in list(self.multipart_uploads(prefix)):
            if older_than is not None and started is not None and time.time() - started < older_than:
                continue
            aborted += self.abort_upload(key, upload_id)
        return aborted

    def abort_upload(self, key: str, upload_id: str) -> bool:
        """Abort one multipart upload; False if it had already ended."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._k(key), UploadId=upload_id)
        except self._boto_errors() as exc:
            if _error_code(exc) in ("NoSuchUpload", "404"):  # finished or aborted meanwhile
                return False
            raise self._fail("abort the multipart upload of", key, exc) from exc
        return True

    def list_dirs(self, prefix: str) -> list[str]:
        base = self._p(prefix)
        names = []
        for page in self._pages(prefix, delimiter="/"):
            for common in page.get("CommonPrefixes", ()):
                names.append(common["Prefix"][len(base) :].rstrip("/"))
        return sorted(names)

    def copy(self, src_key: str, dst_key: str) -> None:
        try:
            self.client.copy(
                {"Bucket": self.bucket, "Key": self._k(src_key)}, self.bucket, self._k(dst_key), Config=self._transfer_config()
            )
        except self._boto_errors() as exc:
            raise self._fail("copy", src_key, exc) from exc

    def create_json(self, key: str, doc: Any) -> bool:
        return self.put_json_if(key, doc, None)

    def get_json_with_etag(self, key: str) -> tuple[Any, str] | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
            data = response["Body"].read()
        except self._boto_errors() as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._fail("read", key, exc) from exc
        return _loads(data, self.uri_for(key)), response["ETag"]

    def put_json_if(self, key: str, doc: Any, etag: str | None) -> bool:
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        body = _dumps(doc)
        for attempt in range(5):
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._k(key), Body=body, ContentType="application/json", **condition
                )
                return True
            except self._boto_errors() as exc:
                code = _error_code(exc)
                if code in ("PreconditionFailed", "412"):
                    return False
                if etag is not None and code in ("NoSuchKey", "404"):
                    return False  # it was deleted since we read it
                if code in ("ConditionalRequestConflict", "409") and attempt < 4:
                    time.sleep(0.05 * (attempt + 1))  # a concurrent conditional write is in flight
                    continue
                raise self._fail("write", key, exc) from exc
        return False  # pragma: no cover

    def local_path(self, key: str) -> pathlib.Path | None:
        return None

    # -- files
    def upload_file(self, local_path: str | pathlib.Path, key: str, progress: Progress | None = None) -> None:
        self.upload_many([(local_path, key)], progress)

    def download_file(self, key: str, local_path: str | pathlib.Path, progress: Progress | None = None) -> None:
        try:
            size = self.client.head_object(Bucket=self.bucket, Key=self._k(key))["ContentLength"]
        except self._boto_errors() as exc:
            raise self._fail("read", key, exc) from exc
        self._download([(key, pathlib.Path(local_path), int(size))], progress)

    def upload_many(self, items: Iterable[tuple[str | pathlib.Path, str]], progress: Progress | None = None) -> list[ObjectInfo]:
        """Large files go through the transfer manager (multipart, parallel parts); small files are sent
        with one put_object each on a thread pool, all at the same time as the large ones."""
        jobs = []
        for path, key in items:
            try:
                size = os.path.getsize(path)
            except OSError as exc:
                raise NotFoundError(f"cannot upload {path}: {exc}") from exc
            jobs.append((pathlib.Path(path), key, self._k(key), size))
        large = [job for job in jobs if job[3] >= self.multipart_threshold]
        small = [job for job in jobs if job[3] < self.multipart_threshold]

        def put_small(job: tuple[pathlib.Path, str, str, int]) -> None:
            path, key, s3_key, size = job
            try:
                with open(path, "rb") as fh:
                    self.client.put_object(Bucket=self.bucket, Key=s3_key, Body=fh.read())
            except OSError as exc:
                raise WorkspaceError(f"cannot read {path}: {exc}") from exc
            except self._boto_errors() as exc:
                raise self._fail("upload", key, exc) from exc
            if progress is not None:
                progress(size)

        def put_large(manager: Any, subscribers: list) -> list:
            return [
                (job, manager.upload(str(job[0]), self.bucket, job[2], subscribers=subscribers)) for job in large
            ]

        self._run_transfers(small, put_small, large, put_large, progress, "upload")
        return [ObjectInfo(key, size) for _, key, _, size in jobs]

    def download_many(self, items: Iterable[tuple[str, str | pathlib.Path]], progress: Progress | None = None) -> list[ObjectInfo]:
        items = list(items)
        if not items:
            return []
        sizes: dict[str, int] = {}
        if len(items) > 1:
            # Sizes decide the method; one listing of the common parent beats one HEAD per key.
            split = [key.split("/")[:-1] for key, _ in items]
            common = []
            for parts in zip(*split, strict=False):
                if len(set(parts)) != 1:
                    break
                common.append(parts[0])
            if common:
                wanted = {key for key, _ in items}
                sizes = {info.key: info.size for info in self.list("/".join(common)) if info.key in wanted}
        jobs = []
        for key, path in items:
            if key not in sizes:
                try:
                    sizes[key] = int(self.client.head_object(Bucket=self.bucket, Key=self._k(key))["ContentLength"])
                except self._boto_errors() as exc:
                    raise self._fail("read", key, exc) from exc
            jobs.append((key, pathlib.Path(path), sizes[key]))
        self._download(jobs, progress)
        return [ObjectInfo(key, size) for key, _, size in jobs]

    def download_dir(self, prefix: str, local_dir: str | pathlib.Path, progress: Progress | None = None) -> list[ObjectInfo]:
        prefix = check_prefix(prefix)
        dest = pathlib.Path(local_dir)
        cut = len(prefix) + 1 if prefix else 0
        jobs = [(info.key, dest / info.key[cut:], info.size) for info in self.list(prefix)]
        dest.mkdir(parents=True, exist_ok=True)
        self._download(jobs, progress)
        return [ObjectInfo(key, size) for key, _, size in jobs]

    def _download(self, jobs: list[tuple[str, pathlib.Path, int]], progress: Progress | None) -> None:
        for _, path, _ in jobs:
            path.parent.mkdir(parents=True, exist_ok=True)
        large = [job for job in jobs if job[2] >= self.multipart_threshold]
        small = [job for job in jobs if job[2] < self.multipart_threshold]

        def get_small(job: tuple[str, pathlib.Path, int]) -> None:
            key, path, _ = job
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"].read()
            except self._boto_errors() as exc:
                raise self._fail("download", key, exc) from exc
            write_file_atomically(path, body)
            if progress is not None:
                progress(len(body))

        def get_large(manager: Any, subscribers: list) -> list:
            return [
                (job, manager.download(self.bucket, self._k(job[0]), str(job[1]), subscribers=subscribers))
                for job in large
            ]

        # A large object is fetched as at most max_concurrency ranged GETs (each >= multipart_chunksize):
        # every worker busy, as few requests as possible. Some S3-compatible servers (moto among them)
        # read the whole object for each range, which makes small ranges very costly there.
        biggest = max((job[2] for job in large), default=0)
        chunk = max(self.multipart_chunksize, -(-biggest // self.max_concurrency))
        self._run_transfers(small, get_small, large, get_large, progress, "download", chunk)

    def _run_transfers(self, small: list, run_small: Callable, large: list, submit_large: Callable,
                       progress: Progress | None, action: str, chunksize: int | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=self.max_concurrency) if small else None
        manager = None
        try:
            small_futures = [pool.submit(run_small, job) for job in small] if pool else []
            large_futures = []
            if large:
                from boto3.s3.transfer import ProgressCallbackInvoker, create_transfer_manager

                manager = create_transfer_manager(self.client, self._transfer_config(chunksize))
                subscribers = [ProgressCallbackInvoker(progress)] if progress is not None else []
                large_futures = submit_large(manager, subscribers)
            for future in small_futures:
                future.result()
            for job, future in large_futures:
                try:
                    future.result()
                except self._boto_errors() as exc:
                    raise self._fail(action, job[1] if action == "upload" else job[0], exc) from exc
                except WorkspaceError:
                    raise
                except Exception as exc:  # s3transfer's own errors (retries exhausted...), OSError
                    raise WorkspaceError(f"cannot {action} {job[0]} ({self.uri}): {exc}") from exc
        except BaseException:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                pool = None
            if manager is not None:
                manager.shutdown(cancel=True)
                manager = None
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
            if manager is not None:
                manager.shutdown()

    def delete_prefix(self, prefix: str) -> int:
        if not check_prefix(prefix) and not self.prefix:
            raise ValueError("refusing to delete a whole bucket")
        if not check_prefix(prefix):
            raise ValueError("refusing to delete the whole workspace root")
        keys = (obj["Key"] for page in self._pages(prefix) for obj in page.get("Contents", ()))
        return self._delete_s3_keys(keys, prefix)

    def delete_keys(self, keys: Iterable[str]) -> int:
        """Delete these objects (keys relative to the workspace) with DeleteObjects, 1,000 keys a request, in
        the order given; returns how many. A key that does not exist is no error."""
        return self._delete_s3_keys((self._k(key) for key in keys), "")

    def _delete_s3_keys(self, s3_keys: Iterable[str], what: str) -> int:
        count = 0
        batch: list[dict] = []

        def flush() -> None:
            try:
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except self._boto_errors() as exc:
                raise self._fail("delete", what or self._rel(batch[0]["Key"]), exc) from exc
            if response.get("Errors"):
                first = response["Errors"][0]
                raise WorkspaceError(f"cannot delete {first.get('Key')} in {self.uri}: {first.get('Message')}")

        for s3_key in s3_keys:
            batch.append({"Key": s3_key})
            count += 1
            if len(batch) == 1000:
                flush()
                batch = []
        if batch:
            flush()
        return count

    def __repr__(self) -> str:
        return f"S3Datastore({self.uri!r}, endpoint_url={self.endpoint_url!r})"
