"""Registry errors: raised where an S3/MLflow problem is detected, with the fix in the message."""

from spelltransfer.errors import ConfigError, SpellTransferError


class RegistryError(SpellTransferError):
    """The registry stack (S3 server, MLflow server, model registry) cannot do what was asked."""


class CredentialsError(ConfigError):
    """S3 credentials are missing, unreadable or rejected; the message names the variable or file."""


class ServerStartError(RegistryError):
    """A server process exited or did not become ready; the message points to its log file."""
