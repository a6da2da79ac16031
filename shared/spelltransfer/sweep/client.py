"""Client side of the sweep controller: what the CLI and the local demo call.

gRPC errors come back as ``SweepRpcError`` carrying the status code name and the server's message
(which names the bad field), so the CLI prints one line instead of a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import grpc
from rich.table import Table

from spelltransfer.errors import SpellTransferError
from spelltransfer.platform.protos import sweep_pb2, sweep_pb2_grpc
from spelltransfer.platform.security import SecuritySettings, open_channel
from spelltransfer.safe_yaml import read_yaml_text

CONTROLLER_ENV = "SPELLTRANSFER_CONTROLLER"
DEFAULT_CONTROLLER = "127.0.0.1:50051"


class SweepRpcError(SpellTransferError):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except grpc.RpcError as error:
        raise SweepRpcError(error.code(), error.details() or "") from None


def spec_text_for_submit(path: Path) -> str:
    """The spec file's text as the controller should read it (size-bounded here).

    A relative ``base_config`` is sent as written: the controller and its workers resolve it
    against their own working directory and check it under their ``configs`` roots
    (``spelltransfer.platform.roots``), like every other path in the spec. Rewriting it to this
    machine's absolute path broke a spec submitted from a host to a controller in a container
    (``/home/me/repo/configs/...`` exists only here) and pointed local services at the same file
    they already find from the shared working directory.
    """
    return read_yaml_text(path)  # bounded: a spec over the size limit is refused here


class SweepClient:
    def __init__(self, address: str | None = None, settings: SecuritySettings | None = None):
        self.address = address or os.environ.get(CONTROLLER_ENV, DEFAULT_CONTROLLER)
        self._channel = open_channel(self.address, settings)
        self._stub = sweep_pb2_grpc.SweepServiceStub(self._channel)

    def submit_file(self, path: str | Path) -> sweep_pb2.Sweep:
        path = Path(path)
        if not path.is_file():
            raise SpellTransferError(f"sweep spec {path} does not exist")
        return self.submit_text(spec_text_for_submit(path), str(path))

    def submit_text(self, spec_yaml: str, source: str = "sweep spec") -> sweep_pb2.Sweep:
        return _call(self._stub.SubmitSweep, sweep_pb2.SubmitSweepRequest(spec_yaml=spec_yaml, source=source), timeout=120)

    def get(self, name: str) -> sweep_pb2.Sweep:
        return _call(self._stub.GetSweep, sweep_pb2.SweepRef(name=name), timeout=30)

    def cancel(self, name: str) -> sweep_pb2.Sweep:
        return _call(self._stub.CancelSweep, sweep_pb2.SweepRef(name=name), timeout=60)

    def list(self) -> list[sweep_pb2.Sweep]:
        return list(_call(self._stub.ListSweeps, sweep_pb2.ListSweepsRequest(), timeout=30).sweeps)

    def workers(self) -> list[sweep_pb2.Worker]:
        return list(_call(self._stub.ListWorkers, sweep_pb2.ListWorkersRequest(), timeout=30).workers)

    def watch(self, name: str) -> Iterator[sweep_pb2.SweepEvent]:
        try:
            yield from self._stub.WatchSweep(sweep_pb2.SweepRef(name=name))
        except grpc.RpcError as error:
            raise SweepRpcError(error.code(), error.details() or "") from None

    def close(self) -> None:
        self._channel.close()


def trials_table(sweep: sweep_pb2.Sweep) -> Table:
    """The sweep's trials as a rich table: params, the three validation accuracies, objective, steps."""
    state = sweep_pb2.SweepState.Name(sweep.state).removeprefix("SWEEP_")
    title = f"sweep {sweep.name} [{state}] objective={sweep.objective}"
    if sweep.best_number >= 0:
        title += f" best=#{sweep.best_number} ({sweep.best_value:.4f})"
    table = Table(title=title)
    param_names = sorted({name for trial in sweep.trials for name in trial.params})
    for column in ["#", "state", *param_names, "spelling", "position", "count", "objective", "steps", "stop",
                   "tries", "time s"]:
        table.add_column(column, justify="right" if column not in ("state", "stop") else "left")
    for trial in sweep.trials:
        acc = [f"{trial.metrics[k]:.3f}" if k in trial.metrics else "-" for k in
               ("spelling_accuracy", "position_accuracy", "count_accuracy")]
        table.add_row(str(trial.number), trial.state, *[trial.params.get(n, "") for n in param_names], *acc,
                      f"{trial.objective:.4f}" if trial.has_objective else "-", str(trial.steps),
                      trial.stop_reason or (trial.error[:40] if trial.error else ""), str(trial.attempts),
                      f"{trial.duration_s:.0f}")
    return table
