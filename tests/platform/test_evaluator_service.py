"""The evaluator service over real gRPC: per-task metrics as the CLI reports them, streamed."""

from __future__ import annotations

import json

import grpc
import pytest

from spelltransfer.platform.protos import evaluator_pb2


@pytest.mark.slow
def test_evaluate_streams_progress_and_returns_per_task_metrics(evaluator, tiny_model_path, tiny_dataset):
    request = evaluator_pb2.EvaluateRequest(model=tiny_model_path, data=tiny_dataset, split="validation", limit=3,
                                            extra_args=["--batch-size=8"])
    updates = list(evaluator.Evaluate(request, timeout=300))
    assert updates[0].stage == "started" and updates[-1].stage == "done"
    assert all(u.stage == "running" for u in updates[1:-1])
    done = updates[-1]
    assert set(done.tasks) == {"spelling", "position", "count"}
    for metrics in done.tasks.values():
        assert metrics.n == 3 and 0.0 <= metrics.ci95_low <= metrics.accuracy <= metrics.ci95_high <= 1.0
    result = json.loads(done.result_json)
    assert result["tasks"]["count"]["n"] == 3 and done.predictions == 9


@pytest.mark.parametrize("change, field", [
    ({"data": "/nonexistent"}, "data"),
    ({"model": ""}, "model"),
    ({"split": "dev"}, "split"),
    ({"adapter": "/nonexistent"}, "adapter"),
])
def test_bad_requests_are_invalid_argument(evaluator, tiny_dataset, change, field):
    fields = {"model": "smollm2-135m", "data": tiny_dataset, "split": "validation", **change}
    with pytest.raises(grpc.RpcError) as error:
        list(evaluator.Evaluate(evaluator_pb2.EvaluateRequest(**fields), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith(f"{field}:")
