"""Shell scripts run by the ``copy-agent`` init container and the ``checkout`` container.

``copy-agent`` runs in the agent image and lays out the shared ``/workspace`` volume (reference
§4.3-§4.4): the directories the agent expects, world-writable so any user can use them, and static
copies of ``buildkite-agent`` and ``tini-static`` that every other container runs from.

``checkout`` runs ``buildkite-agent-entrypoint kubernetes-bootstrap`` through ``/bin/sh -c`` so the
image entrypoint's SSH-key handling runs (reference §4.7). When the pod runs as a non-root user both
containers run as root: copy-agent hands ``/workspace`` to that user, and checkout creates a matching
``buildkite-agent`` user (BusyBox ``adduser`` or shadow ``useradd``) and drops to it with ``su``.
"""

from __future__ import annotations

from dataclasses import dataclass

from podspec.interposer import shell_quote

WORKSPACE = "/workspace"
GIT_CREDENTIALS_RO = "/buildkite/git-credentials-ro"
GIT_CREDENTIALS = "/buildkite/git-credentials"
CHECKOUT_USER = "buildkite-agent"
_DIRS = " ".join(f"{WORKSPACE}/{d}" for d in ("build", "plugins", "sockets"))


@dataclass(frozen=True, slots=True)
class RunAs:
    """The pod's non-root identity (``securityContext.runAsUser`` ≠ 0, optional ``runAsGroup``)."""

    uid: int
    gid: int | None = None

    @property
    def owner(self) -> str:
        return f"{self.uid}" if self.gid is None else f"{self.uid}:{self.gid}"


def copy_agent_script(run_as: RunAs | None) -> str:
    lines = [
        f"mkdir -p {_DIRS}",
        f"chmod 777 {_DIRS}",
        f"cp /usr/local/bin/buildkite-agent {WORKSPACE}/buildkite-agent",
        # tini-static lives in /sbin on the Alpine agent image and /usr/bin on Debian/Ubuntu ones.
        "if [ -e /sbin/tini-static ]; then cp /sbin/tini-static /workspace/tini-static; "
        "elif [ -e /usr/bin/tini-static ]; then cp /usr/bin/tini-static /workspace/tini-static; "
        'else echo "tini-static not found in the agent image" >&2; exit 1; fi',
    ]
    if run_as is not None:
        lines.append(f"chown -R {run_as.owner} {WORKSPACE}")
    return "\n".join(lines) + "\n"


def checkout_script(*, run_as: RunAs | None, git_credentials: bool) -> str:
    bootstrap = "buildkite-agent-entrypoint kubernetes-bootstrap"
    if run_as is None:
        lines = ["set -exuf", _credentials_setup() if git_credentials else "true", bootstrap]
        return "\n".join(lines)
    lines = ["set -exuf", *_create_user(run_as)]
    user_steps = [bootstrap]
    if git_credentials:
        lines.append(f"cp {GIT_CREDENTIALS_RO}/.git-credentials {GIT_CREDENTIALS}/.git-credentials")
        lines.append(f"chown -R {run_as.owner} {GIT_CREDENTIALS}")
        user_steps.insert(0, _credential_helper())
    lines.append(f"su {CHECKOUT_USER} -c {shell_quote(' && '.join(user_steps))}")
    return "\n".join(lines)


def _credentials_setup() -> str:
    # The secret volume is read-only and git's store helper rewrites its file, so work on a copy.
    copy = f"cp {GIT_CREDENTIALS_RO}/.git-credentials {GIT_CREDENTIALS}/.git-credentials"
    return f"{copy}\n{_credential_helper()}"


def _credential_helper() -> str:
    return f"git config --global credential.helper 'store --file={GIT_CREDENTIALS}/.git-credentials'"


def _create_user(run_as: RunAs) -> list[str]:
    """Create ``buildkite-agent`` with the pod's uid (and gid, else group root), home /workspace."""
    uid, gid = run_as.uid, run_as.gid
    group = "root" if gid is None else CHECKOUT_USER
    shadow = f"useradd -M -d {WORKSPACE} -s /bin/sh -u {uid} -g {group} {CHECKOUT_USER}"
    busybox = f"adduser -D -H -h {WORKSPACE} -s /bin/sh -u {uid} -G {group} {CHECKOUT_USER}"
    if gid is not None:
        # Reuse a group that already has this gid; BusyBox adduser needs a group *name*.
        group_lookup = f"awk -F: '$3 == {gid} {{ print $1; exit }}' /etc/group"
        shadow = f"getent group {gid} >/dev/null || groupadd -g {gid} {CHECKOUT_USER}\n" + shadow.replace(
            f"-g {group}", f"-g {gid}"
        )
        busybox = (
            f'group="$({group_lookup})"\n'
            f'if [ -z "$group" ]; then addgroup -g {gid} {CHECKOUT_USER}; group={CHECKOUT_USER}; fi\n'
            + busybox.replace(f"-G {group}", '-G "$group"')
        )
    return [
        "if command -v useradd >/dev/null 2>&1; then",
        shadow,
        "else",
        busybox,
        "fi",
    ]
