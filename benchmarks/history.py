"""Years of history at the cost of days: how everyday operations grow with the number of runs recorded.

Run from the repository root: ``python benchmarks/history.py`` (about 20 minutes on 2 cores, most of it
building the workspaces; it starts its own ``moto_server`` on loopback and removes everything it wrote at
the end, also on Ctrl-C or an error). ``--backends local,s3`` picks the backends, ``--sizes 1000,10000`` the
local sizes, ``--s3-sizes 100,1000`` the S3 sizes, ``--reps 5`` the timed rounds.

Sizes. Local: 1,000 and 10,000 runs. S3 (moto): 100 and 1,000 runs by default, NOT 1,000 and 10,000:
moto serves about 200 requests a second here and a run takes about 50 (0.2 s a run on 16 threads), so
10,000 runs would take over 30 minutes to build and 3,000 over 10; the gc passes on moto grow the same way.
The ratio still compares 10x the history.

Each workspace is built through the project's own APIs, like ``benchmarks/gc_scale.py`` (its builder is
not imported: it runs serially and reuses a folder, this one runs on a thread pool and on S3 too): N runs of
a pipeline of two steps (``prep`` -> ``train``), each with its run and step records (``RunStore``), one
committed output per step (``commit_output``, a file of ~20 bytes) and one cache entry per step
(``StepCache.commit``); every 4th run registers its ``prep`` output as the next version of one dataset,
``table`` (``producing_run`` naming it), so ``table`` has N/4 versions. The last run is built last, so the
``latest`` cache pointers name it. Then one real gc (as if 30 days later) collects the garbage of the
history (the superseded outputs, about 3/4 of them): the workspace is then as a workspace that is collected
regularly, a history of N runs plus N/4 registered versions. That first pass is printed, not part of R (it
deletes garbage in proportion to the history, by nature).

Timed at each size, in interleaved rounds (sizes alternate in order, operations too), medians:

- ``gc dry run``: ``collect_garbage(older_than_days=7, dry_run=True)`` as if 30 days later, after K=10 new
  unreferenced outputs were committed (each round's "day" of garbage): it must report exactly those K;
- ``gc real``: the same pass, deleting them (checked: exactly K collected, every time);
- ``mlpipe runs list``: the CLI in process (typer's ``CliRunner``, ``runs list --workspace URI``, the default
  newest 20);
- ``name:latest``: ``ws.datasets.resolve("table:latest")``;
- ``register one version``: ``ws.datasets.register("table", <a new local folder of one small file>)``;
- ``reuse decision``: ``ws.cache.lookup(key)`` of the last run's ``train`` step, checked to be a hit.

Per backend a table: median time at each size and the ratio largest / smallest size. The last line is
``RESULT history ratio=R goal<=2``: R = the worst ratio over every operation and backend (flat or
logarithmic growth passes; linear growth gives about 10).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_mlpipe.workspace.core import Workspace  # noqa: E402
from airflow_mlpipe.workspace.gc import collect_garbage  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from gc_scale import add_run  # noqa: E402 - the same history as benchmarks/gc_scale.py builds

GOAL = 2.0
DAY = 86400.0
GARBAGE = 10  # unreferenced outputs committed before each round's gc passes
DATASET = "table"
OPERATIONS = ("gc dry run", "gc real", "mlpipe runs list", "name:latest", "register one version", "reuse decision")


class Bench:
    """One workspace of ``runs`` runs on one backend, and the timed operations on it."""

    def __init__(self, ws: Workspace, runs: int, scratch: pathlib.Path, workers: int):
        self.ws = ws
        self.runs = runs
        self.scratch = scratch
        self.workers = workers
        self.last_key = ""
        self.counter = 0  # new content for registrations and garbage
        self.garbage = 0  # garbage outputs committed and not yet collected

    def _folder(self, name: str, text: str) -> pathlib.Path:
        src = self.scratch / name
        src.mkdir(parents=True)
        (src / "data.bin").write_bytes(text.encode())
        return src

    def _run(self, i: int) -> str:
        return add_run(self.ws, i, self.scratch, DATASET)  # the train step's key

    def build(self) -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for _ in pool.map(self._run, range(self.runs - 1)):
                pass
        self.last_key = self._run(self.runs - 1)  # last: the latest pointers name it
        return time.perf_counter() - started

    def collect(self, dry_run: bool) -> object:
        return collect_garbage(self.ws.datastore, older_than_days=7, dry_run=dry_run, now=time.time() + 30 * DAY)

    def add_garbage(self) -> None:
        for _ in range(GARBAGE):
            self.counter += 1
            src = self._folder(f"junk-{self.counter}", f"junk {self.counter}\n")
            self.ws.commit_output(src, self.ws.output_prefix("bench", f"orphan-{self.counter:06d}", "train", "out"))
            shutil.rmtree(src)
        self.garbage += GARBAGE

    # -- the timed operations
    def gc_dry(self) -> None:
        report = self.collect(dry_run=True)
        if len(report.collected) != self.garbage:
            raise SystemExit(f"gc dry run at {self.runs} runs found {len(report.collected)} outputs to collect; "
                             f"expected {self.garbage}")

    def gc_real(self) -> None:
        report = self.collect(dry_run=False)
        if len(report.collected) != self.garbage:
            raise SystemExit(f"gc at {self.runs} runs collected {len(report.collected)} outputs; "
                             f"expected {self.garbage}")
        self.garbage = 0

    def runs_list(self) -> None:
        from typer.testing import CliRunner

        from airflow_mlpipe.cli.main import app

        result = CliRunner().invoke(app, ["runs", "list", "--workspace", self.ws.uri])
        if result.exit_code != 0 or "run-" not in result.output:
            raise SystemExit(f"mlpipe runs list failed ({result.exit_code}): {result.output[-500:]}")

    def latest(self) -> None:
        version = self.ws.datasets.resolve(f"{DATASET}:latest")
        if version.version < self.runs // 4:
            raise SystemExit(f"{DATASET}:latest is version {version.version}; expected >= {self.runs // 4}")

    def register(self) -> None:
        self.counter += 1
        src = self._folder(f"new-{self.counter}", f"new version {self.counter}\n")
        version = self.ws.datasets.register(DATASET, src)
        shutil.rmtree(src)
        if not version.is_new:
            raise SystemExit("registering new content did not make a new version")

    def lookup(self) -> None:
        if self.ws.cache.lookup(self.last_key) is None:
            raise SystemExit(f"the reuse decision at {self.runs} runs was a miss; expected a hit")

    def operations(self) -> dict[str, Callable[[], None]]:
        return dict(zip(OPERATIONS, (self.gc_dry, self.gc_real, self.runs_list, self.latest, self.register,
                                     self.lookup), strict=True))


def timed(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(benches: list[Bench], rounds: int) -> dict[int, dict[str, list[float]]]:
    """Interleaved rounds: sizes alternate in order, operations too (gc dry run always right before gc real,
    both after the round's garbage was committed). One round first, untimed, to warm up."""
    times: dict[int, dict[str, list[float]]] = {b.runs: {op: [] for op in OPERATIONS} for b in benches}
    for r in range(-1, rounds):
        for bench in benches if r % 2 == 0 else reversed(benches):
            ops = bench.operations()
            others = [op for op in OPERATIONS if not op.startswith("gc")]
            order = ["gc"] + others if r % 2 == 0 else list(reversed(others)) + ["gc"]
            for op in order:
                if op == "gc":
                    bench.add_garbage()
                    dry, real = timed(ops["gc dry run"]), timed(ops["gc real"])
                    if r >= 0:
                        times[bench.runs]["gc dry run"].append(dry)
                        times[bench.runs]["gc real"].append(real)
                else:
                    took = timed(ops[op])
                    if r >= 0:
                        times[bench.runs][op].append(took)
        if r >= 0:
            print(f"  round {r + 1}/{rounds} done", flush=True)
    return times


def table(label: str, times: dict[int, dict[str, list[float]]]) -> list[tuple[float, str]]:
    sizes = sorted(times)
    small, large = sizes[0], sizes[-1]
    print(f"\n{label}: median of {len(times[small][OPERATIONS[0]])} interleaved rounds, ms")
    header = f"  {'operation':<22}" + "".join(f"{f'{n} runs':>14}" for n in sizes) + f"{'ratio':>9}"
    print(header)
    ratios = []
    for op in OPERATIONS:
        medians = {n: statistics.median(times[n][op]) for n in sizes}
        ratio = medians[large] / medians[small]
        ratios.append((ratio, op))
        print(f"  {op:<22}" + "".join(f"{medians[n] * 1000:>14.1f}" for n in sizes) + f"{ratio:>9.2f}")
    return ratios


def run_backend(backend: str, sizes: list[int], root: pathlib.Path, rounds: int,
                make_ws: Callable[[int], Workspace]) -> list[tuple[float, str]]:
    print(f"\n== {backend} ==", flush=True)
    benches = []
    for runs in sizes:
        bench = Bench(make_ws(runs), runs, root / f"scratch-{backend}-{runs}", workers=4 if backend == "local" else 16)
        built = bench.build()
        objects = sum(1 for _ in bench.ws.datastore.list(""))
        started = time.perf_counter()
        report = bench.collect(dry_run=False)
        first = time.perf_counter() - started
        left = sum(1 for _ in bench.ws.datastore.list(""))
        print(f"  {runs} runs: built in {built:.1f} s ({objects} objects); first real gc (not in R): "
              f"{first:.2f} s, collected {len(report.collected)} outputs, kept {len(report.kept)}, "
              f"{len(report.entries_removed)} cache entries removed; {left} objects left", flush=True)
        benches.append(bench)
    return table(backend, measure(benches, rounds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="local,s3")
    parser.add_argument("--sizes", default="1000,10000", help="local sizes (runs)")
    parser.add_argument("--s3-sizes", default="100,1000", help="S3 (moto) sizes (runs)")
    parser.add_argument("--reps", type=int, default=int(os.environ.get("MLPIPE_BENCH_N", "5")))
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or set(backends) - {"local", "s3"}:
        parser.error("--backends: local, s3 or both")
    sizes = {"local": sorted(int(s) for s in args.sizes.split(",")),
             "s3": sorted(int(s) for s in args.s3_sizes.split(","))}
    for backend in backends:
        if len(sizes[backend]) < 2:
            parser.error(f"{backend}: give at least two sizes")

    def stop(signum, frame):  # noqa: ARG001 - a TERM cleans up like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    root = pathlib.Path(tempfile.mkdtemp(prefix="mlpipe-bench-history-"))
    proc = None
    ratios: list[tuple[float, str]] = []
    print(f"history: runs of 2 steps, a dataset version every 4 runs; {GARBAGE} new unreferenced outputs "
          f"before each round's gc passes; {args.reps} interleaved rounds")
    print(f"sizes: local {sizes['local']}; S3 (moto) {sizes['s3']}"
          + (" (smaller than local: building 10,000 runs on moto takes over 30 minutes; still 10x)"
             if sizes["s3"] == [100, 1000] else ""))
    try:
        if "local" in backends:
            local = run_backend("local", sizes["local"], root, args.reps,
                                lambda n: Workspace.from_uri((root / f"local-{n}").as_uri()))
            ratios += [(r, f"{op}, local") for r, op in local]
        if "s3" in backends:
            from tests.fixtures.moto import ACCESS_KEY, REGION, SECRET_KEY, create_bucket, start_moto

            proc, endpoint = start_moto()
            os.environ.update(MLPIPE_S3_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=ACCESS_KEY,
                              AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION)
            for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
                os.environ.pop(name, None)
            print(f"moto at {endpoint}")
            s3 = run_backend("s3 (moto)", sizes["s3"], root, args.reps,
                             lambda n: Workspace.from_uri(f"s3://{create_bucket(endpoint, f'mlpipe-history-{n}')}/ws"))
            ratios += [(r, f"{op}, s3") for r, op in s3]
    finally:
        if proc is not None:
            from tests.fixtures.moto import stop_moto

            stop_moto(proc)
        shutil.rmtree(root, ignore_errors=True)
    worst, where = max(ratios)
    print(f"\nR = worst ratio {worst:.2f} ({where})")
    print(f"RESULT history ratio={worst:.2f} goal<={GOAL:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
