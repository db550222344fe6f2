"""Per-step overhead of the local compute target + step runtime, venv builds, snapshots.

Run from the repository root: ``python benchmarks/step_overhead.py`` (about 1-2 minutes).

(a) a no-op step through ``LocalTarget.run`` (venv already built, runtime already staged, local
    workspace, result.json written) vs a bare ``<same venv python> noop.py`` subprocess, N runs each,
    interleaved; median and p90. Also the same step from a snapshot into a fresh scratch dir.
(b) building a venv with one small requirement (``six``): uv vs ``python -m venv`` + pip.
(c) ``workspace.snapshot.snapshot_source`` of a generated 10,000-file, 500 MB tree: cold, then unchanged.

The last line is ``RESULT step_overhead ratio=R goal<=G``: R = median step time / median bare time,
G = (bare median + 0.3 s) / bare median, both from this run: the step may cost at most 0.3 s more
than starting the interpreter itself.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_mlpipe.compute import StepRequest, get_target  # noqa: E402
from airflow_mlpipe.compute.venvs import ensure_venv  # noqa: E402
from airflow_mlpipe.workspace.datastore import LocalDatastore  # noqa: E402

N = int(os.environ.get("MLPIPE_BENCH_N", "20"))
BUDGET_S = 0.3
FILES, TOTAL_MB = 10_000, 500


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def context(ws: LocalDatastore, i: int, snapshot: dict | None = None) -> dict:
    return {
        "format": 1, "workspace": ws.uri, "pipeline": "bench", "run_id": f"r{i}", "step": "noop", "attempt": 1,
        "snapshot": snapshot, "script": "noop.py", "argv": [], "params": {}, "inputs": {}, "outputs": {},
        "result_key": f"runs/bench/r{i}/steps/noop/attempt-1/result.json",
        "kept_outputs_key": f"runs/bench/r{i}/steps/noop/attempt-1/outputs", "tags": {},
    }


def bench_step_overhead(root: pathlib.Path) -> tuple[float, float]:
    base_python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    config = {"venv_dir": str(root / "venvs"), "runtime_dir": str(root / "runtime"), "scratch_dir": str(root / "scratch")}
    venv = ensure_venv(base_python, [], cache_dir=config["venv_dir"])
    src = root / "src"
    src.mkdir()
    (src / "noop.py").write_text("pass\n")
    ws = LocalDatastore(str(root / "ws"))
    from airflow_mlpipe.workspace.snapshot import snapshot_source

    snap = snapshot_source(ws, src, cache_dir=root / "hashcache", git=False)
    snapshot = {"key": snap.key, "sha256": snap.sha256}

    def step(i: int, with_snapshot: bool = False) -> float:
        request = StepRequest(context=context(ws, i, snapshot if with_snapshot else None), python=base_python,
                              workdir=None if with_snapshot else str(src))
        t0 = time.perf_counter()
        code = get_target("local", config).run(request, lambda line: None)
        elapsed = time.perf_counter() - t0
        if code != 0:
            raise SystemExit(f"no-op step failed with exit code {code}")
        return elapsed

    def bare() -> float:
        t0 = time.perf_counter()
        subprocess.run([str(venv.python), "noop.py"], cwd=src, check=True)
        return time.perf_counter() - t0

    step(-1)  # stage the runtime, warm the page cache
    bare()
    steps, bares, snap_steps = [], [], []
    for i in range(N):
        bares.append(bare())
        steps.append(step(i))
        snap_steps.append(step(1000 + i, with_snapshot=True))
    print(f"(a) per-step overhead, N={N} each, interpreter {base_python} (step venv {venv.path.name[:12]})")
    print(f"    bare `python noop.py`           median {statistics.median(bares) * 1000:7.1f} ms   p90 {p90(bares) * 1000:7.1f} ms")
    print(f"    local step (pre-unpacked dir)   median {statistics.median(steps) * 1000:7.1f} ms   p90 {p90(steps) * 1000:7.1f} ms")
    print(f"    local step (snapshot, scratch)  median {statistics.median(snap_steps) * 1000:7.1f} ms   p90 {p90(snap_steps) * 1000:7.1f} ms")
    print(f"    overhead (median step - median bare): {(statistics.median(steps) - statistics.median(bares)) * 1000:.1f} ms "
          f"(budget {BUDGET_S * 1000:.0f} ms)")
    return statistics.median(steps), statistics.median(bares)


def bench_venvs(root: pathlib.Path) -> None:
    base_python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    # python -m venv needs ensurepip: Debian's system python may lack it (python3-venv); use ours then.
    probe = subprocess.run([base_python, "-c", "import ensurepip"], capture_output=True)
    pip_python = base_python if probe.returncode == 0 else sys.executable
    print("(b) venv with one small requirement (six), fresh environment each")
    for label, use_uv, python in (("uv venv + uv pip install", True, base_python),
                                  ("python -m venv + pip install", False, pip_python)):
        try:
            venv = ensure_venv(python, ["six"], cache_dir=root / f"venvs-{use_uv}", use_uv=use_uv)
        except Exception as exc:  # the package index may be unreachable
            print(f"    {label:32s} failed: {exc}")
            continue
        cached = ensure_venv(python, ["six"], cache_dir=root / f"venvs-{use_uv}", use_uv=use_uv)
        print(f"    {label:32s} {venv.seconds:6.2f} s   (reuse: {cached.seconds * 1000:.2f} ms)")


def bench_snapshot(root: pathlib.Path) -> None:
    from airflow_mlpipe.workspace.snapshot import snapshot_source

    tree = root / "tree"
    size = TOTAL_MB * 1024 * 1024 // FILES
    pool = os.urandom(4 * 1024 * 1024)
    t0 = time.perf_counter()
    for i in range(FILES):
        directory = tree / f"d{i // 200:03d}"
        if i % 200 == 0:
            directory.mkdir(parents=True)
        offset = (i * 7919) % (len(pool) - size)
        (directory / f"f{i:05d}.bin").write_bytes(i.to_bytes(4, "big") + pool[offset:offset + size - 4])
    generated = time.perf_counter() - t0
    time.sleep(2.1)  # files changed less than 2 s ago are not trusted to the stat cache (racy mtime or ctime)
    ws = LocalDatastore(str(root / "ws-snap"))
    cache = root / "hashcache-snap"
    t0 = time.perf_counter()
    cold = snapshot_source(ws, tree, cache_dir=cache, git=False)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = snapshot_source(ws, tree, cache_dir=cache, git=False)
    warm_s = time.perf_counter() - t0
    if warm.sha256 != cold.sha256 or warm.uploaded:
        raise SystemExit("unchanged tree gave a different snapshot")
    archive = ws.local_path(cold.key).stat().st_size / 1024 / 1024
    print(f"(c) snapshot of {FILES} files, {TOTAL_MB} MB (generated in {generated:.1f} s; archive {archive:.0f} MB)")
    print(f"    cold (hash + tar.gz + store)    {cold_s:6.2f} s")
    print(f"    unchanged (stat cache, no I/O)  {warm_s:6.2f} s")


def main() -> None:
    root = pathlib.Path(tempfile.mkdtemp(prefix="mlpipe-bench-"))
    try:
        step_median, bare_median = bench_step_overhead(root)
        bench_venvs(root)
        if os.environ.get("MLPIPE_BENCH_SKIP_SNAPSHOT") != "1":
            bench_snapshot(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratio = step_median / bare_median
    goal = (bare_median + BUDGET_S) / bare_median
    print(f"ratio R = median step / median bare = {step_median * 1000:.1f} ms / {bare_median * 1000:.1f} ms; "
          f"goal G = (bare + {BUDGET_S} s) / bare, i.e. at most {BUDGET_S * 1000:.0f} ms of overhead per step")
    print(f"RESULT step_overhead ratio={ratio:.2f} goal<={goal:.2f}")


if __name__ == "__main__":
    main()
