"""MlpipeMergeOperator: the last task of a partitioned (``batch_score``) step. It gathers the outputs of
the mapped partition tasks into one output per name (partition N's files under ``pNNNNN/``), written
server-side (object copies, no download) with the manifest last, reuses an identical earlier merge, and
registers the merged output as one dataset version."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_mlpipe.compat import BaseOperator
from airflow_mlpipe.errors import StepFailed
from airflow_mlpipe.operators import resolve
from airflow_mlpipe.operators.common import fail_fast
from airflow_mlpipe.operators.steprun import StepResult, StepRun

if TYPE_CHECKING:
    from airflow_mlpipe.compat import Context


def merge_metrics(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Integer metrics add up (rows scored); other numbers are averaged over the partitions."""
    merged: dict[str, Any] = {}
    names = sorted({name for part in parts for name in part})
    for name in names:
        values = [p[name] for p in parts if isinstance(p.get(name), (int, float)) and not isinstance(p.get(name), bool)]
        if not values:
            continue
        merged[name] = sum(values) if all(isinstance(v, int) for v in values) else sum(values) / len(values)
    return merged


class MlpipeMergeOperator(BaseOperator):
    """Merge the outputs of the mapped task ``partitioned_task_id`` into the outputs of step ``step``."""

    template_fields: Sequence[str] = ()
    ui_color = "#d8f5e0"

    def __init__(
        self,
        *,
        partitioned_task_id: str,
        step: str,
        outputs: Mapping[str, Mapping[str, Any] | None],
        partitions: int,
        pipeline: str | None = None,
        allow_reuse: bool = True,
        mlpipe_conn_id: str = "mlpipe_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.partitioned_task_id = partitioned_task_id
        self.step = step
        self.partitions = int(partitions)
        self.outputs = {name: dict(cfg or {}) for name, cfg in outputs.items()}
        self.pipeline = pipeline
        self.allow_reuse = allow_reuse
        self.mlpipe_conn_id = mlpipe_conn_id
        registered = [cfg["register_as"] for cfg in self.outputs.values() if cfg.get("register_as")]
        if registered:
            from airflow_mlpipe.assets import dataset_alias

            self.outlets = [*self.outlets, *(dataset_alias(name) for name in registered)]

    @property
    def step_name(self) -> str:
        return self.step

    @fail_fast
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlpipe.workspace.cache import cache_key

        run = StepRun.start(self, context, open_run=False)  # the partitions opened the run's record
        parts = list(context["ti"].xcom_pull(task_ids=self.partitioned_task_id,
                                             map_indexes=list(range(self.partitions))) or [])
        if not parts or any(not isinstance(p, dict) for p in parts):
            raise StepFailed(f"step {self.step!r}: the partition tasks {self.partitioned_task_id!r} left no outputs")
        components = {
            "merge": self.step,
            "outputs": sorted(self.outputs),
            "parts": [{name: p["outputs"][name]["digest"] for name in sorted(self.outputs)} for p in parts],
        }
        key = cache_key(components)
        entry = run.ws.cache.lookup(key) if self.allow_reuse and not run.regenerate else None
        if entry is not None:
            outputs, metrics, reused, origin = entry.outputs, entry.metrics, True, entry.run
            self.log.info("merge of %s reused from run %s", self.step, (origin or {}).get("run_id"))
        else:
            outputs = {name: self._merge(run, name, parts) for name in sorted(self.outputs)}
            metrics = merge_metrics([p.get("metrics") or {} for p in parts])
            run.ws.cache.commit(key, run.pipeline, self.step, components, outputs, metrics,
                                {"pipeline": run.pipeline, "run_id": run.run_id, "step": self.step})
            reused, origin = False, None
        registered = run.register_outputs(self.outputs, outputs)
        self.log.info("merged %d partitions of %s: %s", len(parts), self.step, metrics)
        return run.finish(
            StepResult(self.step, reused, outputs, metrics, registered, cache_key=key, reused_from=origin),
            partitions=len(parts), reused_partitions=sum(bool(p.get("reused")) for p in parts),
        )

    def _merge(self, run: StepRun, name: str, parts: list[dict]) -> dict[str, Any]:
        from airflow_mlpipe.workspace.manifest import merge_outputs

        dest = resolve.destination(self.outputs[name], run.pipeline, run.run_id, self.step, name)
        try:
            manifest = merge_outputs(run.ws.datastore, dest, [(p["outputs"][name]["key"], p["outputs"][name]["digest"])
                                                               for p in parts])
        except ValueError as exc:
            raise StepFailed(f"step {self.step!r}, output {name!r}: {exc}; run the step again") from exc
        return {"key": dest, "uri": run.ws.datastore.uri_for(dest), "digest": manifest["digest"],
                "size": manifest.get("size", 0), "files": len(manifest["files"])}
