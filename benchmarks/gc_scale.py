"""How ``mlpipe gc`` (a dry run of ``workspace.gc.collect_garbage``) scales with the history it examines.

Run from the repository root: ``python benchmarks/gc_scale.py`` (about two minutes, most of it building the
workspaces). ``--sizes 100,1000`` picks the sizes; ``--workdir DIR`` keeps the generated workspaces there and
reuses them on the next call (to time another version of gc on the very same data).

Each workspace is a local folder filled through the project's own APIs: N runs of a pipeline of two steps
(``prep`` -> ``train``), each run with its run and step records (``RunStore``), one committed output per step
(``commit_output``) and one cache entry per step (``StepCache.commit``, so the ``latest`` pointers move on
and every older entry is superseded); every 4th run registers its ``prep`` output as a dataset version
(``producing_run`` naming it), so a quarter of the history stays referenced. gc runs as if 30 days later:
every output is old, the referenced ones are kept.

The baseline, in the same run: a bare listing of the same workspace (``datastore.list("")``, every object
with its size and time), which any gc has to do at least once. The last line is
``RESULT gc_scale ratio=R goal<=G``: R = gc dry-run time / bare listing time at the largest size; a gc that is
linear in what it examines stays a small constant factor above the listing whatever the size.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from airflow_mlpipe.workspace.cache import cache_key  # noqa: E402
from airflow_mlpipe.workspace.core import Workspace  # noqa: E402
from airflow_mlpipe.workspace.datastore import open_datastore  # noqa: E402
from airflow_mlpipe.workspace.gc import collect_garbage  # noqa: E402

GOAL = 10.0
LIMIT_S = 60  # a gc that takes longer than this is stopped and reported as such
DAY = 86400.0


def build(root: pathlib.Path, runs: int) -> Workspace:
    """A workspace of ``runs`` runs (see the module docstring); reused when ``root`` already holds it."""
    done = root / ".complete"
    ws = Workspace(open_datastore(root.as_uri()))
    if done.exists():
        return ws
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="gc-scale-src-"))
    for i in range(runs):
        add_run(ws, i, scratch, f"table-{i % 20}")
    shutil.rmtree(scratch, ignore_errors=True)
    done.write_text(str(runs))
    return ws


def add_run(ws: Workspace, i: int, scratch: pathlib.Path, dataset: str) -> str:
    """Run ``run-<i>`` of pipeline ``bench`` through the project's APIs: its run record, then for ``prep`` and
    ``train`` a committed output, a cache entry and a step record; every 4th run registers its ``prep`` output
    as the next version of ``dataset``. Returns the ``train`` step's cache key (``benchmarks/history.py``
    builds its histories with it too)."""
    run_id = f"run-{i:06d}"
    ws.runs.open_run("bench", run_id, {"params": {"i": i}})
    key = ""
    for step in ("prep", "train"):
        src = scratch / f"{run_id}-{step}"
        src.mkdir(parents=True)
        (src / "data.bin").write_bytes(f"{run_id}/{step}\n".encode())
        prefix = ws.output_prefix("bench", run_id, step, "out")
        manifest = ws.commit_output(src, prefix)
        shutil.rmtree(src)
        components = {"step": {"name": step, "script": f"{step}.py"}, "params": {"i": i}}
        key = cache_key(components)
        out = {"out": {"key": prefix, "digest": manifest["digest"]}}
        ws.cache.commit(key, "bench", step, components, out)
        ws.runs.write_step("bench", run_id, step, {"status": "succeeded", "cache_key": key, "outputs": out})
        if step == "prep" and i % 4 == 0:
            ws.datasets.register(dataset, prefix, producing_run={"pipeline": "bench", "run_id": run_id,
                                                                 "step": step, "output": "out"})
    return key


class _TooLong(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise _TooLong


def timed_gc(ws: Workspace) -> tuple[float | None, object]:
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(LIMIT_S)
    start = time.perf_counter()
    try:
        report = collect_garbage(ws.datastore, older_than_days=7, dry_run=True, now=time.time() + 30 * DAY)
    except _TooLong:
        return None, None
    finally:
        signal.alarm(0)
    return time.perf_counter() - start, report


def timed_listing(ws: Workspace) -> tuple[float, int]:
    start = time.perf_counter()
    count = sum(1 for _ in ws.datastore.list(""))
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--workdir", help="keep (and reuse) the generated workspaces here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    base = pathlib.Path(args.workdir) if args.workdir else pathlib.Path(tempfile.mkdtemp(prefix="gc-scale-"))
    try:
        ratio = measure(base, sizes)
    finally:
        if not args.workdir:  # a workspace of our own: removed, also after an error or Ctrl-C
            shutil.rmtree(base, ignore_errors=True)
    print(f"RESULT gc_scale ratio={ratio:.2f} goal<={GOAL:g}")


def measure(base: pathlib.Path, sizes: list[int]) -> float:
    """Build (or reuse) the workspaces below ``base``, print a line per size; the ratio at the largest."""
    base.mkdir(parents=True, exist_ok=True)
    print(f"{'runs':>6} {'objects':>8} {'build s':>8} {'listing s':>10} {'gc dry s':>9} {'ratio':>7} "
          f"{'collected':>9} {'kept':>6}")
    ratio = float("inf")
    for runs in sizes:
        start = time.perf_counter()
        ws = build(base / f"ws-{runs}", runs)
        built = time.perf_counter() - start
        timed_listing(ws)  # warm the file system cache for both
        listing, objects = min(timed_listing(ws) for _ in range(3))
        gc_s, report = timed_gc(ws)
        if gc_s is None:
            print(f"{runs:>6} {objects:>8} {built:>8.1f} {listing:>10.3f} {'>' + str(LIMIT_S):>9} {'-':>7} "
                  f"{'-':>9} {'-':>6}   (stopped after {LIMIT_S} s)")
            ratio = float("inf")
            continue
        ratio = gc_s / listing
        print(f"{runs:>6} {objects:>8} {built:>8.1f} {listing:>10.3f} {gc_s:>9.3f} {ratio:>7.1f} "
              f"{len(report.collected):>9} {len(report.kept):>6}")
    return ratio


if __name__ == "__main__":
    main()
