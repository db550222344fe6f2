"""Data movement inside a step: snapshot unpacking, inputs, output directories, output commit.

Standard library only (plus whatever the datastore backend imports lazily: boto3 for S3).
Layout below the step's cwd (docs/internals.md, "Launch context"):

    ./                      the unpacked snapshot (the script and its neighbours)
    ./.mlpipe/inputs/NAME   a read-only copy of each input (downloaded, or copied from a local datastore)
    ./.mlpipe/outputs/NAME  an empty directory per declared output
    ./outputs/              kept after the run (uploaded to ``kept_outputs_key``)
"""

from __future__ import annotations

import os
import pathlib
import posixpath
import shutil
from typing import Any

from airflow_mlpipe.errors import MlpipeError
from airflow_mlpipe.rules import ArchiveError
from airflow_mlpipe.runtime.lease import LeaseLost

MANIFEST_NAME = "_manifest.json"
DIGEST_NAME = "_digest.json"  # the manifest's summary (workspace/manifest.py), metadata too
STATE_DIR = ".mlpipe"


class RuntimeStepError(MlpipeError):
    """A step could not be prepared or committed (exit code 2 unless the script itself failed)."""


def open_workspace(uri: str) -> Any:
    """Open the workspace datastore named in the launch context.

    S3 settings travel as environment variables (never in the context): the usual ``AWS_*``
    variables, read by boto3 itself, and ``MLPIPE_S3_ENDPOINT_URL`` for non-AWS endpoints.
    """
    from airflow_mlpipe.workspace.datastore import open_datastore

    options: dict[str, Any] = {}
    endpoint = os.environ.get("MLPIPE_S3_ENDPOINT_URL")
    if endpoint and uri.startswith("s3://"):
        options["endpoint_url"] = endpoint
    try:
        return open_datastore(uri, **options)
    except Exception as exc:
        raise RuntimeStepError(f"cannot open the workspace {uri!r}: {exc}") from exc


# -- snapshot ---------------------------------------------------------------------------------
def unpack_snapshot(datastore: Any, key: str, dest_dir: pathlib.Path) -> list[str]:
    """Unpack ``snapshots/<sha>.tar.gz`` into ``dest_dir`` with ``rules.extract_tar`` (shipped in the bundle:
    regular files and folders only, nothing outside ``dest_dir``). Returns the extracted file names."""
    from airflow_mlpipe.workspace.datastore import extract_archive

    where = datastore.uri_for(key)
    try:
        return extract_archive(datastore, key, dest_dir)
    except ArchiveError as exc:
        raise RuntimeStepError(
            f"cannot unpack the step's source snapshot {where}: {exc}. It is damaged or was not written by "
            "airflow_mlpipe: delete it and run the step again (its source is snapshotted again)"
        ) from exc
    except OSError as exc:
        raise RuntimeStepError(f"cannot unpack the step's source snapshot {where} into {dest_dir}: {exc}") from exc


# -- inputs -----------------------------------------------------------------------------------
INPUT_KINDS = ("dir", "folder", "file")


def materialise_inputs(datastore: Any, inputs: dict[str, Any], workdir: pathlib.Path) -> dict[str, pathlib.Path]:
    """name -> a read-only local copy under ``./.mlpipe/inputs/NAME``, whatever the datastore (a local one
    too: a script that writes to its input must not change committed data, and as root file modes would not
    stop it; the copies are 0444 as a signal to other users). Kinds: ``dir`` (a committed output: the files
    its manifest lists), ``folder`` (every file below a prefix without manifest), ``file`` (keeps its name).

    ``digest`` (what the operator's cache key used) is checked against the copy: cheaply for a ``dir``
    whose source still verifies against its manifest after the copy, by hashing the copy otherwise."""
    paths: dict[str, pathlib.Path] = {}
    for name, spec in sorted((inputs or {}).items()):
        key = str(spec.get("key") or "").strip("/")
        kind = spec.get("kind", "dir")
        if not key:
            raise RuntimeStepError(f"input {name!r} has no key in the launch context")
        if kind not in INPUT_KINDS:
            raise RuntimeStepError(f"input {name!r}: kind must be one of {', '.join(INPUT_KINDS)}, got {kind!r}")
        dest = workdir / STATE_DIR / "inputs" / name
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        paths[name] = _copy_input(datastore, name, key, kind, spec.get("digest"), dest)
        for folder, _, files in os.walk(dest):
            for file in files:
                os.chmod(os.path.join(folder, file), 0o444)
    return paths


def _copy_input(datastore: Any, name: str, key: str, kind: str, digest: str | None, dest: pathlib.Path) -> pathlib.Path:
    from airflow_mlpipe.errors import NotFoundError
    from airflow_mlpipe.workspace.manifest import build_manifest, download_output, hash_file, verify_content

    where = datastore.uri_for(key)
    try:
        if kind == "dir":
            try:
                manifest = download_output(datastore, key, dest)  # only the files its manifest lists
            except NotFoundError as exc:
                raise RuntimeStepError(
                    f"input {name!r}: {where} has no {MANIFEST_NAME}, so it does not exist (the step that writes "
                    "it did not finish); run the producing step again"
                ) from exc
            expected = digest or manifest["digest"]
            if manifest["digest"] == expected and not verify_content(datastore, key, manifest):
                return dest  # the source still holds its manifest's content after the copy: so does the copy
            real, target = build_manifest(dest)["digest"], dest
        elif kind == "folder":
            if not datastore.download_dir(key, dest):
                raise RuntimeStepError(f"input {name!r}: nothing at {where}")
            for meta in (MANIFEST_NAME, DIGEST_NAME):  # metadata, never content (stale ones, here)
                (dest / meta).unlink(missing_ok=True)
            real, target = (build_manifest(dest)["digest"] if digest else None), dest
        else:
            target = dest / posixpath.basename(key)
            datastore.download_file(key, target)
            real = hash_file(target) if digest else None
    except NotFoundError as exc:
        raise RuntimeStepError(f"input {name!r}: {where} does not exist ({exc})") from exc
    if digest and real != digest:
        raise RuntimeStepError(
            f"input {name!r}: {where} does not hold what the step was keyed on (digest {digest[:12]}, found "
            f"{str(real)[:12]}): it changed after the step was planned; run the step again"
        )
    return target


# -- outputs ----------------------------------------------------------------------------------
def prepare_outputs(outputs: dict[str, Any], workdir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Create one empty local directory per declared output: ``./.mlpipe/outputs/NAME``."""
    paths: dict[str, pathlib.Path] = {}
    for name in sorted(outputs or {}):
        if not (outputs[name] or {}).get("key"):
            raise RuntimeStepError(f"output {name!r} has no key in the launch context")
        dest = workdir / STATE_DIR / "outputs" / name
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        paths[name] = dest
    return paths


def commit_outputs(
    datastore: Any, outputs: dict[str, Any], local_dirs: dict[str, pathlib.Path], fence: Any = None
) -> dict[str, dict[str, Any]]:
    """Upload each output and write its manifest last (``workspace.manifest.commit_output``).
    ``fence`` (the attempt's lease check) runs before each output is touched and right before each
    manifest is written; its LeaseLost propagates as it is.

    Returns name -> {key, digest, size, files} for result.json.
    """
    from airflow_mlpipe.workspace.manifest import commit_output

    committed: dict[str, dict[str, Any]] = {}
    for name in sorted(outputs or {}):
        key = str(outputs[name]["key"]).strip("/")
        try:
            manifest = commit_output(datastore, local_dirs[name], key, fence=fence)
        except LeaseLost:
            raise
        except Exception as exc:
            raise RuntimeStepError(f"output {name!r}: upload to {datastore.uri_for(key)} failed: {exc}") from exc
        files = manifest.get("files") or {}
        committed[name] = {
            "key": key,
            "digest": manifest.get("digest"),
            "size": manifest.get("size", sum(int(f.get("size", 0)) for f in files.values())),
            "files": len(files),
        }
    return committed


def upload_kept_outputs(datastore: Any, workdir: pathlib.Path, key: str | None) -> int:
    """Upload ``./outputs/`` (if the script wrote anything there) to ``kept_outputs_key``."""
    kept = workdir / "outputs"
    if not key or not kept.is_dir() or not any(kept.iterdir()):
        return 0
    uploaded = datastore.upload_dir(kept, key.strip("/"))
    return len(uploaded or [])
