"""SweepService over ``spelltransfer.sweep.controller.SweepController``: parse, call, serialise.

Run: ``spelltransfer platform controller --state-dir DIR --port 50051 [--worker HOST:PORT ...]``.
Workers either are listed here or register themselves (``spelltransfer platform trainer
--controller HOST:PORT``).
"""

from __future__ import annotations

import logging

from spelltransfer.platform.errors import map_errors
from spelltransfer.platform.protos import sweep_pb2, sweep_pb2_grpc
from spelltransfer.platform.security import SecuritySettings, bind, make_server
from spelltransfer.sweep.controller import SweepController, SweepView, TrialView

log = logging.getLogger(__name__)

_STATES = {"RUNNING": sweep_pb2.SWEEP_RUNNING, "COMPLETED": sweep_pb2.SWEEP_COMPLETED,
           "CANCELLED": sweep_pb2.SWEEP_CANCELLED, "FAILED": sweep_pb2.SWEEP_FAILED}


def trial_message(trial: TrialView) -> sweep_pb2.SweepTrial:
    return sweep_pb2.SweepTrial(
        number=trial.number, state=trial.state, params=trial.params, attempts=trial.attempts, worker=trial.worker,
        worker_trial_id=trial.worker_trial_id, has_objective=trial.objective is not None,
        objective=trial.objective or 0.0, metrics=trial.metrics, steps=trial.steps, stop_reason=trial.stop_reason,
        error=trial.error, duration_s=trial.duration_s)


def sweep_message(view: SweepView) -> sweep_pb2.Sweep:
    return sweep_pb2.Sweep(
        name=view.name, state=_STATES[view.state], objective=view.objective, max_trials=view.max_trials,
        trials=[trial_message(t) for t in view.trials], best_number=view.best_number, best_value=view.best_value,
        trials_csv=view.trials_csv, mlflow_run_id=view.mlflow_run_id, error=view.error, created_at=view.created_at,
        finished_at=view.finished_at)


@map_errors
class SweepServicer(sweep_pb2_grpc.SweepServiceServicer):
    def __init__(self, controller: SweepController):
        self.controller = controller

    def SubmitSweep(self, request, context):
        return sweep_message(self.controller.submit(request.spec_yaml, request.source or "sweep spec"))

    def GetSweep(self, request, context):
        return sweep_message(self.controller.get(request.name))

    def WatchSweep(self, request, context):
        for kind, number, message, view in self.controller.watch(request.name, is_active=context.is_active):
            yield sweep_pb2.SweepEvent(name=view.name, kind=kind, trial_number=number, message=message,
                                       sweep=sweep_message(view))

    def CancelSweep(self, request, context):
        return sweep_message(self.controller.cancel(request.name))

    def ListSweeps(self, request, context):
        return sweep_pb2.ListSweepsResponse(sweeps=[sweep_message(v) for v in self.controller.list()])

    def RegisterWorker(self, request, context):
        return sweep_pb2.Worker(**self.controller.register_worker(request.address, request.slots or 1))

    def ListWorkers(self, request, context):
        return sweep_pb2.ListWorkersResponse(workers=[sweep_pb2.Worker(**w) for w in self.controller.workers()])


def serve(state_dir: str, host: str = "127.0.0.1", port: int = 0, workers: list[str] | tuple[str, ...] = (),
          default_slots: int = 1, roots=None):
    """Start the controller service; returns ``(server, port, stop)``. ``roots``: see the trainer's ``serve``."""
    settings = SecuritySettings.from_env()
    server = make_server(settings)  # fails before any state is touched if the token is missing
    controller = SweepController(state_dir, workers=workers, default_slots=default_slots, roots=roots)
    sweep_pb2_grpc.add_SweepServiceServicer_to_server(SweepServicer(controller), server)
    bound = bind(server, settings, f"{host}:{port}")
    server.start()
    log.info("sweep controller on %s:%d (state %s)", host, bound, controller.state_dir)

    def stop() -> None:
        server.stop(grace=2).wait()
        controller.close()

    return server, bound, stop
