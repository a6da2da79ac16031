"""The registry: MLflow tracking server + S3 artifacts, an upload outbox, and the model registry.

- ``stack``: ``registry up|down|status`` — ``weed mini`` (or external MinIO) and ``mlflow server``
- ``outbox``: artifacts are copied locally first, uploaded with retry, verified, then cleaned
- ``model_registry``: register a sweep's best trial as ``champion``; ``pull NAME@champion``
"""

from spelltransfer.registry.config import RegistryConfig
from spelltransfer.registry.credentials import S3Credentials, load_credentials
from spelltransfer.registry.errors import CredentialsError, RegistryError, ServerStartError
from spelltransfer.registry.stack import RegistryStack

__all__ = [
    "RegistryConfig", "RegistryStack", "S3Credentials", "load_credentials",
    "CredentialsError", "RegistryError", "ServerStartError",
]
