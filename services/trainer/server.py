"""TrainerService over ``spelltransfer.platform.worker.TrainerWorker``: parse, call, serialise.

Run: ``spelltransfer platform trainer --work-dir DIR --port 50061 [--controller HOST:PORT] [--slots K]
[--pack-size P]``. With ``--controller`` the worker registers itself (and re-registers every few
seconds, so a restarted controller learns about it again) with its ``slots``; ``pack_size`` is the
worker's own business (up to P of its K trials train as one packed process, docs/platform.md).
"""

from __future__ import annotations

import logging
import threading

from spelltransfer.platform.errors import map_errors
from spelltransfer.platform.protos import sweep_pb2, sweep_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from spelltransfer.platform.security import SecuritySettings, bind, make_server, open_channel
from spelltransfer.platform.worker import TrainerWorker, TrialRecord

log = logging.getLogger(__name__)

_STATES = {name: trainer_pb2.TrialState.Value(f"TRIAL_{name}") for name in
           ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")}


def trial_message(record: TrialRecord) -> trainer_pb2.Trial:
    return trainer_pb2.Trial(
        trial_id=record.trial_id, state=_STATES[record.state], output_dir=record.output_dir,
        last_step=record.last_step, metrics=record.metrics, stop_reason=record.stop_reason, error=record.error,
        launches=record.launches, created_at=record.created_at, updated_at=record.updated_at,
        config_path=record.config_path, overrides=record.overrides, labels=record.labels,
        metrics_json=record.metrics_json, phase=record.phase,
        tracking_run_ids=record.tracking_run_ids)


def event_message(trial_id: str, line: int, event: dict) -> trainer_pb2.TrialEvent:
    import json

    from spelltransfer.run_folder import flatten_numbers

    def number(key: str) -> float:
        value = event.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0

    return trainer_pb2.TrialEvent(
        trial_id=trial_id, event=str(event.get("event", "")), step=int(number("step")), loss=number("loss"),
        lr=number("lr"), metrics=flatten_numbers(event.get("metrics") or {}),
        reason=str(event.get("reason") or event.get("message") or ""), payload_json=json.dumps(event), line=line,
        state=_STATES.get(str(event.get("state", "")), 0))


@map_errors
class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, worker: TrainerWorker):
        self.worker = worker

    def StartTrial(self, request, context):
        record = self.worker.start_trial(request.trial_id, request.config_path, list(request.overrides),
                                         dict(request.labels), request.evaluate or "auto",
                                         config_yaml=request.config_yaml)
        return trial_message(record)

    def WatchTrial(self, request, context):
        for line, event in self.worker.watch(request.trial_id, request.from_line, is_active=context.is_active):
            yield event_message(request.trial_id, line, event)

    def GetTrial(self, request, context):
        return trial_message(self.worker.get_trial(request.trial_id))

    def ListTrials(self, request, context):
        return trainer_pb2.ListTrialsResponse(
            trials=[trial_message(r) for r in self.worker.list_trials(request.active_only)])

    def CancelTrial(self, request, context):
        return trial_message(self.worker.cancel_trial(request.trial_id))

    def GetWorkerInfo(self, request, context):
        return trainer_pb2.WorkerInfo(**self.worker.info())


def _register_forever(controller: str, address: str, slots: int, stop: threading.Event, every_s: float) -> None:
    channel = open_channel(controller)
    stub = sweep_pb2_grpc.SweepServiceStub(channel)
    while not stop.is_set():
        try:
            stub.RegisterWorker(sweep_pb2.RegisterWorkerRequest(address=address, slots=slots), timeout=5)
        except Exception as error:  # the controller may be down or restarting; keep trying
            log.debug("register with %s failed: %s", controller, error)
        stop.wait(every_s)
    channel.close()


def serve(work_dir: str, host: str = "127.0.0.1", port: int = 0, slots: int = 1, controller: str | None = None,
          advertise: str | None = None, register_every_s: float = 3.0, pack_size: int = 1,
          pack_wait_s: float = 2.0, roots=None):
    """Start the service; returns ``(server, port, stop)`` where ``stop()`` shuts everything down.

    ``roots``: a ``spelltransfer.platform.roots.ServiceRoots``; None = from the environment."""
    settings = SecuritySettings.from_env()
    server = make_server(settings)  # fails before any trial is resumed if the token is missing
    worker = TrainerWorker(work_dir, slots=slots, pack_size=pack_size, pack_wait_s=pack_wait_s, roots=roots)
    trainer_pb2_grpc.add_TrainerServiceServicer_to_server(TrainerServicer(worker), server)
    bound = bind(server, settings, f"{host}:{port}")
    server.start()
    stop_registering = threading.Event()
    if controller:
        address = advertise or f"{host}:{bound}"
        threading.Thread(target=_register_forever, args=(controller, address, slots, stop_registering, register_every_s),
                         daemon=True, name="register").start()
    log.info("trainer worker on %s:%d (%d slot(s), packs of up to %d, work dir %s)", host, bound, slots, pack_size,
             worker.work_dir)

    def stop() -> None:
        stop_registering.set()
        server.stop(grace=2).wait()
        worker.close()

    return server, bound, stop
