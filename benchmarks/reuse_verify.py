"""Deciding to reuse a step whose output has 10,000 files, content verification included.

Run from the repository root: ``python benchmarks/reuse_verify.py`` (5-10 minutes: moto takes a while to
store and list 10,000 objects; it starts its own ``moto_server`` on loopback and removes everything it wrote
at the end).

One output of 10,000 small files is committed through ``commit_output`` (fingerprints recorded in the
manifest) and a cache entry through ``StepCache.commit``, on a local workspace and on an S3 workspace
(moto). Timed, interleaved (the order alternates between rounds), N rounds each, medians:

- local: ``StepCache.lookup(key)`` (entry read, stat walk of the output, fingerprints compared) vs a bare
  stat walk of the same 10,000 files (``os.scandir`` recursion + ``DirEntry.stat()``);
- S3: ``StepCache.lookup(key)`` (entry GET, one paginated listing of the output, sizes and ETags compared)
  vs one paginated listing of the same prefix with a raw boto3 client (``list_objects_v2`` paginator).

For information: on the local workspace, the same lookup when the entry has no fingerprint summary (an
entry written before summaries existed: the manifest is read and every file compared with it); the cost of
each commit.
Each lookup is checked to be a hit, and a file changed in place afterwards is checked to be a miss.

The last line is ``RESULT reuse_verify ratio=R goal<=2``: R = the worse of the two ratios median lookup /
median baseline (local, S3).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_mlpipe.workspace.cache import StepCache, cache_key  # noqa: E402
from airflow_mlpipe.workspace.datastore import LocalDatastore  # noqa: E402
from airflow_mlpipe.workspace.manifest import commit_output  # noqa: E402
from airflow_mlpipe.workspace.s3 import S3Datastore  # noqa: E402
from tests.fixtures.moto import ACCESS_KEY, REGION, SECRET_KEY, create_bucket, start_moto, stop_moto  # noqa: E402

N = int(os.environ.get("MLPIPE_BENCH_N", "7"))
FILES = 10_000
GOAL = 2.0
PREFIX = "outputs/bench/r1/train/model"


def make_output(root: pathlib.Path) -> pathlib.Path:
    out = root / "out"
    for i in range(FILES):
        directory = out / f"part-{i // 1000:02d}"
        if i % 1000 == 0:
            directory.mkdir(parents=True)
        (directory / f"f{i:05d}.json").write_text(f'{{"row": {i}}}\n')
    return out


def stat_walk(top: str) -> int:
    count = 0
    stack = [top]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    entry.stat()
                    count += 1
    return count


def raw_listing(client, bucket: str, prefix: str) -> int:
    return sum(len(page.get("Contents", ())) for page in
               client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"))


def commit_entry(ds, out: pathlib.Path) -> tuple[StepCache, str, float]:
    started = time.perf_counter()
    manifest = commit_output(ds, out, PREFIX)
    committed = time.perf_counter() - started
    components = {"step": {"script": "train.py", "argv": [], "inputs": [], "outputs": {"model": None}},
                  "snapshot": "0" * 64, "environment": "bench", "params": {}, "inputs": {}}
    key = cache_key(components)
    cache = StepCache(ds)
    cache.commit(key, "bench", "train", components, {"model": {"key": PREFIX, "digest": manifest["digest"]}})
    return cache, key, committed


def without_summary(cache: StepCache, key: str) -> str:
    """The same entry as one written before fingerprint summaries existed, under another key."""
    entry = cache.get(key)
    components = {**entry.components, "environment": "bench-no-summary"}
    other = cache_key(components)
    doc = {**dataclasses.asdict(entry), "key": other, "components": components, "fingerprints": {}}
    cache.datastore.put_json(cache.entry_key(other), doc)
    return other


def interleave(timed: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in timed}
    names = list(timed)
    for name in names:  # warm: imports, clients, page cache
        timed[name]()
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            started = time.perf_counter()
            timed[name]()
            times[name].append(time.perf_counter() - started)
    return times


def hit(cache: StepCache, key: str) -> None:
    if cache.lookup(key) is None:
        raise SystemExit(f"lookup of {key[:12]} in {cache.datastore.uri} was a miss; expected a hit")


def report(label: str, times: dict[str, list[float]], ours: str, base: str) -> float:
    print(f"\n{label}")
    for name, values in times.items():
        print(f"  {name:<44}{statistics.median(values) * 1000:9.1f} ms median {min(values) * 1000:9.1f} ms min")
    ratio = statistics.median(times[ours]) / statistics.median(times[base])
    print(f"  ratio {ours} / {base} = {ratio:.3f}")
    for name in times.keys() - {ours, base}:
        print(f"  ratio {name} / {base} = {statistics.median(times[name]) / statistics.median(times[base]):.3f}")
    return ratio


def main() -> int:
    root = pathlib.Path(tempfile.mkdtemp(prefix="mlpipe-bench-reuse-"))
    proc = None
    try:
        t0 = time.perf_counter()
        out = make_output(root)
        print(f"output: {FILES} files of ~14 bytes in 10 folders (generated in {time.perf_counter() - t0:.1f} s); "
              f"{N} interleaved rounds per side, medians")

        local = LocalDatastore(root / "ws")
        cache, key, committed = commit_entry(local, out)
        legacy = without_summary(cache, key)
        print(f"local commit_output (copy, hash, fingerprints, manifest): {committed:.2f} s")
        top = str(local.local_path(PREFIX))
        if stat_walk(top) != FILES + 1:
            raise SystemExit("the committed output does not hold the expected files")
        local_times = interleave({
            "StepCache.lookup": lambda: hit(cache, key),
            "bare stat walk (os.scandir + stat)": lambda: stat_walk(top),
            "lookup without summary (manifest path)": lambda: hit(cache, legacy),
        }, N)

        proc, endpoint = start_moto()
        bucket = create_bucket(endpoint, "mlpipe-bench-reuse")
        s3 = S3Datastore(bucket, "ws", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                         aws_secret_access_key=SECRET_KEY, region_name=REGION)
        s3_cache, s3_key, s3_committed = commit_entry(s3, out)
        print(f"S3 commit_output (upload, hash, one listing, manifest): {s3_committed:.2f} s (moto at {endpoint})")
        import boto3
        from botocore.config import Config

        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name=REGION,
                              config=Config(request_checksum_calculation="when_required",
                                            response_checksum_validation="when_required"))
        if raw_listing(client, bucket, f"ws/{PREFIX}") != FILES + 1:
            raise SystemExit("the S3 output does not hold the expected objects")
        s3_times = interleave({
            "StepCache.lookup": lambda: hit(s3_cache, s3_key),
            "one paginated listing (raw boto3)": lambda: raw_listing(client, bucket, f"ws/{PREFIX}"),
        }, N)

        # the verification is real: a file rewritten in place (same size) is a miss on both stores
        changed = f"{PREFIX}/part-04/f04321.json"
        with open(local.local_path(changed), "r+b") as fh:
            fh.write(b'{"row": 9999}\n')
        s3.write_bytes(changed, b'{"row": 9999}\n')
        for store_cache, store_key in ((cache, key), (s3_cache, s3_key)):
            if store_cache.lookup(store_key) is not None:
                raise SystemExit(f"a file changed in place in {store_cache.datastore.uri} was not seen")
        print("a file changed in place afterwards: a miss on both stores "
              f"({cache.explain('bench', 'train', cache.get(key).components)[0]})")

        local_ratio = report("local workspace", local_times, "StepCache.lookup", "bare stat walk (os.scandir + stat)")
        s3_ratio = report("S3 workspace (moto)", s3_times, "StepCache.lookup", "one paginated listing (raw boto3)")
    finally:
        if proc is not None:
            stop_moto(proc)
        shutil.rmtree(root, ignore_errors=True)
    ratio = max(local_ratio, s3_ratio)
    print(f"\nR = worse of local {local_ratio:.3f} and S3 {s3_ratio:.3f}")
    print(f"RESULT reuse_verify ratio={ratio:.3f} goal<={GOAL:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
