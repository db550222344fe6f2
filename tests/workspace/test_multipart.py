"""A killed writer leaves no open multipart upload behind for long (DESIGN.md section 5): the step's next
attempt aborts those under its outputs before it writes, and ``mlpipe gc`` aborts stale ones anywhere in the
workspace. A real uploader process is SIGKILLed in the middle of a multipart upload to a moto S3 server."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from airflow_mlpipe.operators.resolve import StepPlan, abort_stale_uploads
from airflow_mlpipe.workspace.datastore import open_datastore
from airflow_mlpipe.workspace.gc import collect_garbage
from tests.conftest import REPO, scaled

pytestmark = pytest.mark.integration

UPLOADER = """
import json, os, pathlib, sys, time
from airflow_mlpipe.workspace.datastore import open_datastore
uri, options, path, key, marker = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ds = open_datastore(uri, max_concurrency=1, multipart_threshold=5 * 1024 * 1024,
                    multipart_chunksize=5 * 1024 * 1024, **options)

def progress(sent):  # the first part is on its way: stall here until killed, as a writer cut off mid-upload
    pathlib.Path(marker).write_text(str(sent))
    time.sleep(600)

ds.upload_file(path, key, progress)
"""


def _killed_upload(tmp_path, uri, options, key) -> None:
    """Start a real multipart upload in another process and SIGKILL it once the upload is open."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        for _ in range(40):
            fh.write(os.urandom(1024 * 1024))
    ds = open_datastore(uri, **options)
    marker = tmp_path / f"sent-{key.replace('/', '_')}"
    proc = subprocess.Popen([sys.executable, "-c", UPLOADER, uri, json.dumps(options), str(big), key, str(marker)],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + scaled(120)
        while not (marker.exists() and list(ds.multipart_uploads(key.rsplit("/", 1)[0]))):
            assert proc.poll() is None, "the upload ended before it could be killed"
            assert time.monotonic() < deadline, "no multipart upload appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


def test_the_next_attempt_aborts_uploads_its_killed_predecessor_left(tmp_path, s3_workspace_uri, moto_s3_options):
    from airflow_mlpipe.workspace.core import Workspace

    ws = Workspace.from_uri(s3_workspace_uri, **moto_s3_options)
    prefix = "outputs/p/r1/train/model"
    other = "outputs/p/r1/prep/data"
    _killed_upload(tmp_path, s3_workspace_uri, moto_s3_options, f"{prefix}/weights.bin")
    _killed_upload(tmp_path, s3_workspace_uri, moto_s3_options, f"{other}/rows.bin")
    assert len(list(ws.datastore.multipart_uploads(prefix))) == 1

    plan = StepPlan("p", "r1", "train", None, "", [], {}, {"model": {"key": prefix}}, {}, "0" * 64)
    abort_stale_uploads(ws, plan, logging.getLogger("test"))
    assert list(ws.datastore.multipart_uploads(prefix)) == []
    assert len(list(ws.datastore.multipart_uploads(other))) == 1  # another step's upload is not this one's


def test_gc_aborts_stale_multipart_uploads(tmp_path, s3_workspace_uri, moto_s3_options):
    ds = open_datastore(s3_workspace_uri, **moto_s3_options)
    _killed_upload(tmp_path, s3_workspace_uri, moto_s3_options, "outputs/p/r1/train/model/weights.bin")
    # (moto reports every upload as initiated in 2010, so "younger than the threshold" cannot be shown here)
    later = time.time() + 2 * 86400
    dry = collect_garbage(ds, older_than_days=7, now=later)
    assert [u["key"] for u in dry.stale_uploads] == ["outputs/p/r1/train/model/weights.bin"]
    assert "would abort 1 stale multipart upload(s)" in dry.summary()
    assert len(list(ds.multipart_uploads(""))) == 1  # a dry run aborts nothing
    real = collect_garbage(ds, older_than_days=7, dry_run=False, now=later)
    assert len(real.stale_uploads) == 1
    assert list(ds.multipart_uploads("")) == []
