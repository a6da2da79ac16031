"""The one place where typed errors become gRPC status codes.

Engines raise ``spelltransfer.errors`` types (plus the few platform ones below) where they detect a
problem; servicers never build status codes themselves. ``map_errors`` wraps every method of a
servicer class, unary or streaming, and aborts with the mapped code and the error's message.
"""

from __future__ import annotations

import functools
import inspect
import logging

import grpc

from spelltransfer.errors import ConfigError, DataError, ModelNotFoundError, SpellTransferError

log = logging.getLogger(__name__)


class NotFoundError(SpellTransferError):
    """A trial, sweep or worker with this id does not exist."""


class ResourceExhaustedError(SpellTransferError):
    """No free slot: the worker already runs as many trials as it has slots."""


class FailedPreconditionError(SpellTransferError):
    """The request is valid but the object's state does not allow it (e.g. cancel a finished sweep)."""


class UnavailableError(SpellTransferError):
    """A dependency (worker, evaluator process) cannot be reached right now; retrying may help."""


STATUS_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (DataError, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (SpellTransferError, grpc.StatusCode.FAILED_PRECONDITION),
]


def status_code_for(error: BaseException) -> grpc.StatusCode:
    for error_type, code in STATUS_CODES:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def _abort(context: grpc.ServicerContext, error: Exception, method: str):
    code = status_code_for(error)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("unexpected error in %s", method)
        context.abort(code, f"internal error in {method}: {type(error).__name__}: {error}")
    context.abort(code, str(error))


def _is_abort(error: Exception) -> bool:
    # context.abort() raises a bare Exception() after setting the status; let it through untouched.
    return isinstance(error, grpc.RpcError) or (type(error) is Exception and not error.args)


def _wrap(method):
    name = method.__qualname__
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def streaming(self, request, context):
            try:
                yield from method(self, request, context)
            except Exception as error:  # noqa: BLE001 - mapped, not swallowed
                if _is_abort(error):
                    raise
                _abort(context, error, name)

        return streaming

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as error:  # noqa: BLE001 - mapped, not swallowed
            if _is_abort(error):
                raise
            _abort(context, error, name)

    return unary


def map_errors(cls):
    """Class decorator: every public method defined on ``cls`` maps typed errors to status codes."""
    for attr, value in list(vars(cls).items()):
        if callable(value) and not attr.startswith("_"):
            setattr(cls, attr, _wrap(value))
    return cls
