"""EvaluatorService over ``spelltransfer.platform.evaluation.Evaluator``: parse, call, serialise.

Run: ``spelltransfer platform evaluator --port 50071 [--work-dir DIR]``.
"""

from __future__ import annotations

import json
import logging

from spelltransfer.platform.errors import map_errors
from spelltransfer.platform.evaluation import Evaluator
from spelltransfer.platform.protos import evaluator_pb2, evaluator_pb2_grpc
from spelltransfer.platform.security import SecuritySettings, bind, make_server

log = logging.getLogger(__name__)


def _task_metrics(result: dict) -> dict[str, evaluator_pb2.TaskMetrics]:
    out = {}
    for task, metrics in (result.get("tasks") or {}).items():
        low, high = (list(metrics.get("ci95") or [0.0, 0.0]) + [0.0, 0.0])[:2]
        out[task] = evaluator_pb2.TaskMetrics(accuracy=float(metrics.get("accuracy", 0.0)), ci95_low=float(low),
                                              ci95_high=float(high), n=int(metrics.get("n", 0)))
    return out


@map_errors
class EvaluatorServicer(evaluator_pb2_grpc.EvaluatorServiceServicer):
    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator

    def Evaluate(self, request, context):
        progress = self.evaluator.evaluate(
            request.model, request.adapter, request.data, request.split or "validation", request.limit,
            list(request.extra_args), is_active=context.is_active)
        for update in progress:
            result = update.get("result")
            yield evaluator_pb2.EvaluateProgress(
                stage=update["stage"], elapsed_s=update["elapsed_s"], predictions=update["predictions"],
                tasks=_task_metrics(result) if result else {}, result_json=json.dumps(result) if result else "")


def serve(host: str = "127.0.0.1", port: int = 0, work_dir: str | None = None, roots=None):
    """Start the evaluator service; returns ``(server, port, stop)``. ``roots``: see the trainer's ``serve``."""
    settings = SecuritySettings.from_env()
    server = make_server(settings)
    evaluator_pb2_grpc.add_EvaluatorServiceServicer_to_server(EvaluatorServicer(Evaluator(work_dir, roots=roots)), server)
    bound = bind(server, settings, f"{host}:{port}")
    server.start()
    log.info("evaluator on %s:%d", host, bound)

    def stop() -> None:
        server.stop(grace=2).wait()

    return server, bound, stop
