"""Transfer benchmark: S3Datastore.upload_dir/download_dir vs raw boto3 tuned by hand.

Run from the repository root: ``python benchmarks/transfer.py [--size-mb 1000]``. It starts its own
``moto_server`` on loopback, writes test data under a temporary directory and removes everything at the
end. Data: one large file plus ``size_mb`` small files of 100 KiB (1,000 small files and a ~0.9 GiB
file at the default size). Both sides talk to the same server in the same run; the order alternates
between rounds and each side keeps its best time per phase.

Baseline: boto3's transfer manager through ``client.upload_file``/``download_file`` with a hand-tuned
``TransferConfig`` for the large file, running at the same time as a thread pool doing one
``put_object``/``get_object`` per small file.

Last line: ``RESULT transfer ratio=R goal>=0.9`` with R = baseline time / our time (higher is better).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import pathlib
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_mlpipe.workspace.s3 import S3Datastore  # noqa: E402
from tests.fixtures.moto import ACCESS_KEY, REGION, SECRET_KEY, create_bucket, start_moto, stop_moto  # noqa: E402

MiB = 1024 * 1024
SMALL = 100 * 1024


def make_data(root: pathlib.Path, size_mb: int) -> tuple[pathlib.Path, int]:
    src = root / "src"
    n_small = max(1, size_mb)
    big = size_mb * MiB - n_small * SMALL
    (src / "small").mkdir(parents=True)
    chunk = os.urandom(8 * MiB)
    with open(src / "big.bin", "wb") as fh:
        written = 0
        while written < big:
            part = chunk[: min(len(chunk), big - written)]
            fh.write(os.urandom(16) + part[16:])  # not identical chunks
            written += len(part)
    for i in range(n_small):
        (src / "small" / f"part-{i:05d}.bin").write_bytes(os.urandom(SMALL))
    return src, n_small


class Baseline:
    """Raw boto3, tuned by hand."""

    def __init__(self, endpoint: str, bucket: str, concurrency: int, chunk_mb: int, small_workers: int):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(max_pool_connections=concurrency + small_workers + 4, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required", retries={"mode": "standard"}),
        )
        self.config = TransferConfig(multipart_threshold=chunk_mb * MiB, multipart_chunksize=chunk_mb * MiB,
                                     max_concurrency=concurrency)
        self.small_workers = small_workers

    def upload(self, src: pathlib.Path, prefix: str) -> None:
        files = sorted(p for p in src.rglob("*") if p.is_file())
        big = [p for p in files if p.stat().st_size >= self.config.multipart_threshold]
        small = [p for p in files if p not in big]

        def put(path: pathlib.Path) -> None:
            self.client.put_object(Bucket=self.bucket, Key=f"{prefix}/{path.relative_to(src).as_posix()}", Body=path.read_bytes())

        with ThreadPoolExecutor(self.small_workers + len(big)) as pool:
            futures = [pool.submit(self.client.upload_file, str(p), self.bucket, f"{prefix}/{p.relative_to(src).as_posix()}",
                                   Config=self.config) for p in big]
            futures += [pool.submit(put, p) for p in small]
            for f in futures:
                f.result()

    def download(self, prefix: str, dest: pathlib.Path) -> None:
        objects = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix + "/"):
            objects += page.get("Contents", [])
        for obj in objects:
            (dest / obj["Key"][len(prefix) + 1 :]).parent.mkdir(parents=True, exist_ok=True)

        def get(obj: dict) -> None:
            target = dest / obj["Key"][len(prefix) + 1 :]
            if obj["Size"] >= self.config.multipart_threshold:
                self.client.download_file(self.bucket, obj["Key"], str(target), Config=self.config)
            else:
                target.write_bytes(self.client.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read())

        big = [o for o in objects if o["Size"] >= self.config.multipart_threshold]
        with ThreadPoolExecutor(self.small_workers + len(big)) as pool:
            for f in [pool.submit(get, o) for o in big] + [pool.submit(get, o) for o in objects if o not in big]:
                f.result()

    def delete(self, prefix: str) -> None:
        keys = [{"Key": o["Key"]} for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix + "/") for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[i : i + 1000], "Quiet": True})


def same_tree(a: pathlib.Path, b: pathlib.Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / p, b / p, shallow=False) for p in files_a)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1000, help="total data size in MiB (default 1000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating which side goes first")
    parser.add_argument("--baseline-concurrency", type=int, default=10)
    parser.add_argument("--baseline-chunk-mb", type=int, default=64)
    parser.add_argument("--baseline-small-workers", type=int, default=16)
    parser.add_argument("--no-verify", action="store_true", help="skip comparing downloaded files")
    args = parser.parse_args()

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="mlpipe-bench-"))
    proc, endpoint = start_moto()
    try:
        t0 = time.perf_counter()
        src, n_small = make_data(tmp, args.size_mb)
        total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        print(f"data: {total / MiB:.0f} MiB = 1 file of {(src / 'big.bin').stat().st_size / MiB:.0f} MiB "
              f"+ {n_small} files of 100 KiB (generated in {time.perf_counter() - t0:.1f}s); moto at {endpoint}")
        bucket = create_bucket(endpoint, "mlpipe-bench")
        ours = S3Datastore(bucket, "ours", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                           aws_secret_access_key=SECRET_KEY, region_name=REGION)
        base = Baseline(endpoint, bucket, args.baseline_concurrency, args.baseline_chunk_mb, args.baseline_small_workers)
        print(f"ours: S3Datastore defaults (concurrency {ours.max_concurrency}, chunk {ours.multipart_chunksize // MiB} MiB); "
              f"baseline: concurrency {args.baseline_concurrency}, chunk {args.baseline_chunk_mb} MiB, "
              f"{args.baseline_small_workers} small-file workers")
        best: dict[tuple[str, str], float] = {}

        def timed(side: str, phase: str, fn) -> None:
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            best[(side, phase)] = min(elapsed, best.get((side, phase), float("inf")))
            print(f"  round {rnd + 1} {side:8s} {phase:8s} {elapsed:7.2f}s  {total / MiB / elapsed:7.1f} MiB/s", flush=True)

        for rnd in range(args.rounds):
            sides = ["ours", "baseline"] if rnd % 2 == 0 else ["baseline", "ours"]
            for side in sides:
                if side == "ours":
                    timed(side, "upload", lambda: ours.upload_dir(src, "data"))
                else:
                    timed(side, "upload", lambda: base.upload(src, "base/data"))
            for side in sides:
                dest = tmp / f"dl-{side}"
                shutil.rmtree(dest, ignore_errors=True)
                if side == "ours":
                    timed(side, "download", lambda dest=dest: ours.download_dir("data", dest))
                else:
                    timed(side, "download", lambda dest=dest: base.download("base/data", dest))
                if not args.no_verify and rnd == 0 and not same_tree(src, dest):
                    print(f"ERROR: {side} downloaded different content")
                    return 1
                shutil.rmtree(dest, ignore_errors=True)
            ours.delete_prefix("data")  # frees moto's memory
            base.delete("base/data")

        print()
        print(f"{'phase':10s} {'ours s':>9s} {'ours MiB/s':>11s} {'base s':>9s} {'base MiB/s':>11s} {'ratio':>7s}")
        for phase in ("upload", "download"):
            o, b = best[("ours", phase)], best[("baseline", phase)]
            print(f"{phase:10s} {o:9.2f} {total / MiB / o:11.1f} {b:9.2f} {total / MiB / b:11.1f} {b / o:7.3f}")
        ours_total = best[("ours", "upload")] + best[("ours", "download")]
        base_total = best[("baseline", "upload")] + best[("baseline", "download")]
        print(f"{'total':10s} {ours_total:9.2f} {2 * total / MiB / ours_total:11.1f} {base_total:9.2f} "
              f"{2 * total / MiB / base_total:11.1f} {base_total / ours_total:7.3f}")
        print(f"RESULT transfer ratio={base_total / ours_total:.3f} goal>=0.9")
        return 0
    finally:
        stop_moto(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
