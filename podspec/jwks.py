"""Pipeline-signing keys: where a JWKS file is mounted and where the agent is told to find it.

agent-stack-k8s ``normaliseJWKSFile`` (reference §2.2): with a key volume, an absolute
``signing-jwks-file`` / ``verification-jwks-file`` mounts the volume at that file's directory, a
relative one names a file under the default directory (``key`` when unset). Without a volume the key is
the user's to put in the image, and the path goes to the agent exactly as written.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

SIGNING_DIR = "/buildkite/signing-jwks"
VERIFICATION_DIR = "/buildkite/verification-jwks"
DEFAULT_FILE = "key"


@dataclass(frozen=True, slots=True)
class JwksKey:
    """``file`` for the agent's env var (None: not set); ``mount_dir`` for the volume (None: no volume)."""

    file: str | None
    mount_dir: str | None


def jwks_key(path: str | None, *, has_volume: bool, default_dir: str) -> JwksKey:
    if not has_volume:
        return JwksKey(path or None, None)
    if path and posixpath.isabs(path):
        return JwksKey(path, posixpath.dirname(posixpath.normpath(path)))
    return JwksKey(posixpath.normpath(posixpath.join(default_dir, path or DEFAULT_FILE)), default_dir)


def check_jwks_file(path: str | None, *, has_volume: bool, default_dir: str) -> None:
    """Refuse a path whose key the mounted volume cannot hold; ``ValueError`` says why."""
    key = jwks_key(path, has_volume=has_volume, default_dir=default_dir)
    if key.mount_dir is None or key.file is None:
        return
    if key.file.endswith("/"):
        raise ValueError(f"{path!r} names a directory; name the key file")
    if key.mount_dir == "/":
        # The volume would be mounted over the container's root file system.
        raise ValueError(f"{path!r} is in /; put the key file in a directory of its own")
    if not posixpath.normpath(key.file).startswith(key.mount_dir + "/"):
        raise ValueError(f"{path!r} leaves {default_dir}, where the key volume is mounted")
