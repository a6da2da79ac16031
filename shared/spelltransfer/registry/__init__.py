"""The registry: MLflow tracking server + S3 artifacts, an upload outbox, and the model registry.

- ``stack``: ``registry up|down|status`` — ``weed mini`` (or external MinIO) and ``mlflow server``
- ``outbox``: artifacts are copied locally first, uploaded with retry, verified, then cleaned
- ``model_registry``: register a sweep's best trial as ``champion``; ``pull NAME@champion``

Heavy modules (boto3, mlflow, requests) load on first use, so ``spelltransfer --help`` stays fast.
"""

from spelltransfer.registry.config import RegistryConfig
from spelltransfer.registry.credentials import S3Credentials, load_credentials
from spelltransfer.registry.errors import CredentialsError, RegistryError, ServerStartError

__all__ = [
    "Outbox", "RegistryConfig", "RegistryStack", "S3Credentials", "load_credentials",
    "CredentialsError", "RegistryError", "ServerStartError",
]


def __getattr__(name: str):
    if name == "RegistryStack":
        from spelltransfer.registry.stack import RegistryStack

        return RegistryStack
    if name == "Outbox":
        from spelltransfer.registry.outbox import Outbox

        return Outbox
    raise AttributeError(name)
