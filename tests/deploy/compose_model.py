"""docker-compose.gpu.yml as compose reads it, without a Docker engine (shared by tests/deploy).

``DeployTree(root)`` is the repo's deploy files: ``compose`` is the file after compose's variable
interpolation (``${VAR:-default}`` from ``.env`` or the default, ``$$`` -> ``$``); ``text(path)``
is any file of the tree or None. ``DeployTree.before_issue16()`` is the same files as they were
before issue 16 (tests/deploy/before_issue16/), so each defect test shows it fails on them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

ROOT = Path(__file__).resolve().parents[2]
BEFORE = Path(__file__).resolve().parent / "before_issue16"
COMPOSE_NAME = "docker-compose.gpu.yml"
APP = PurePosixPath("/app")  # WORKDIR of every spelltransfer image
_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}|\$\$")


def dotenv(text: str | None) -> dict[str, str]:
    values = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip('"')
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        return env.get(name) or (default if default is not None else "")

    return _VARIABLE.sub(value, text)


@dataclass
class DeployTree:
    root: Path
    fallback: Path | None = None  # files missing from root are read here (the current tree)

    @classmethod
    def current(cls) -> "DeployTree":
        return cls(ROOT)

    @classmethod
    def before_issue16(cls) -> "DeployTree":
        return cls(BEFORE)

    def text(self, path: str) -> str | None:
        file = self.root / path
        return file.read_text() if file.is_file() else None

    def compose(self, env: dict[str, str] | None = None) -> dict:
        values = dotenv(self.text(".env"))
        values.update(env or {})
        return yaml.safe_load(interpolate(self.text(COMPOSE_NAME), values))

    # -- a service as its container runs it
    def dockerfile(self, compose: dict, name: str) -> str | None:
        service = compose["services"][name]
        build = service.get("build") or next(
            (s["build"] for s in compose["services"].values() if s.get("build") and s.get("image") == service.get("image")),
            None)
        return self.text(build["dockerfile"]) if build else None

    def entrypoint(self, compose: dict, name: str) -> list[str]:
        service = compose["services"][name]
        if service.get("entrypoint"):
            return list(service["entrypoint"])
        match = re.search(r"^ENTRYPOINT (\[.*\])$", self.dockerfile(compose, name) or "", re.M)
        return yaml.safe_load(match.group(1)) if match else []

    def argv(self, compose: dict, name: str) -> list[str]:
        """The container's argv: entrypoint + command (a ``sh -c`` script stays one word)."""
        command = compose["services"][name].get("command", [])
        return self.entrypoint(compose, name) + (shlex.split(command) if isinstance(command, str) else list(command))


def mounts(service: dict) -> dict[PurePosixPath, str]:
    """Container path -> volume name (named volumes and bind mounts alike)."""
    found = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        found[PurePosixPath(target)] = source
    return found


def volume_of(service: dict, path: PurePosixPath) -> str | None:
    """The volume holding ``path`` in the container (the deepest mount above it), or None."""
    best = None
    for target, source in mounts(service).items():
        if path == target or target in path.parents:
            if best is None or len(target.parts) > len(best[0].parts):
                best = (target, source)
    return best[1] if best else None


def in_container(path: str) -> PurePosixPath:
    """A path the code resolves against its working directory, as it lands in a container."""
    return PurePosixPath(path) if path.startswith("/") else APP / path


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None
