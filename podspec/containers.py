"""The containers of a job pod (reference §4.4-§4.7).

* command containers: the user's containers (or ``container-0`` running the agent image), with tini
  as PID 1 and ``buildkite-agent kubernetes-bootstrap`` in place of their entrypoint; what they ran
  moves into ``BUILDKITE_COMMAND``. ``BUILDKITE_CONTAINER_ID`` numbers them after ``checkout`` (0),
  because the agent lets container N start only once N-1 has exited.
* ``agent``: ``buildkite-agent start`` acquiring exactly this job, serving the other containers.
* ``checkout``: the checkout phase, through the image entrypoint so SSH keys are set up.
* sidecars: native sidecars (init containers with ``restartPolicy: Always``) the agent ignores.
* ``copy-agent``: the init container that fills ``/workspace`` (see ``scripts``).
"""

from __future__ import annotations

from typing import Any

from podspec.agentenv import agent_config_mounts, agent_env, env_value
from podspec.gojson import clone
from podspec.inputs import Inputs
from podspec.interposer import interpose
from podspec.patching import BOOTSTRAP_ARGS, TINI
from podspec.scripts import GIT_CREDENTIALS, GIT_CREDENTIALS_RO, checkout_script, copy_agent_script

_COMMAND_ENV = frozenset(
    {"BUILDKITE_BOOTSTRAP_PHASES", "BUILDKITE_COMMAND", "BUILDKITE_CONTAINER_ID", "BUILDKITE_SOCKETS_PATH"}
)
ROOT_CONTEXT = {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False}


def command_containers(user: list[dict[str, Any]], inputs: Inputs) -> list[dict[str, Any]]:
    """Rewrite the starting PodSpec's containers; with none, run the step in the agent image."""
    if not user:
        user = [{"image": inputs.config.image}]
    first_id = 0 if _skip_checkout(inputs) else 1
    return [_command_container(c, i, container_id=first_id + i, inputs=inputs) for i, c in enumerate(user)]


def _command_container(
    source: dict[str, Any], index: int, *, container_id: int, inputs: Inputs
) -> dict[str, Any]:
    container = clone(source)
    command = interpose(
        container.pop("command", None) or [],
        container.pop("args", None) or [],
        interposer=inputs.interposer,
        step_command=inputs.job.command,
    )
    name = container.pop("name", None) or f"container-{index}"
    container = {"name": name, **container}  # name first: easier to read in manifests and logs
    container["command"] = [TINI]
    container["args"] = list(BOOTSTRAP_ARGS)
    container.setdefault("workingDir", "/workspace")
    container["env"] = [
        # Ours replace same-named user entries: duplicates would confuse name-keyed patches.
        *(e for e in container.get("env", []) if e.get("name") not in _COMMAND_ENV),
        _env("BUILDKITE_BOOTSTRAP_PHASES", "plugin,command"),
        _env("BUILDKITE_COMMAND", command),
        _env("BUILDKITE_CONTAINER_ID", container_id),
        _env("BUILDKITE_SOCKETS_PATH", f"/workspace/sockets/{name}"),
    ]
    env_from = [
        *container.get("envFrom", []),
        *clone([*inputs.command_env_from, *inputs.plugin.git_env_from]),
    ]
    _set_list(container, "envFrom", env_from)
    container["volumeMounts"] = [
        *container.get("volumeMounts", []),
        *agent_config_mounts(inputs.config.agent_config, role="command"),
        *clone(inputs.command_mounts),
        inputs.workspace_mount,
        *clone(inputs.plugin.extra_volume_mounts),
    ]
    return container


def sidecars(inputs: Inputs) -> list[dict[str, Any]]:
    out = []
    for index, source in enumerate(inputs.plugin.sidecars):
        container = clone(source)
        container = {"name": container.pop("name", None) or f"sidecar-{index}", **container}
        container["restartPolicy"] = "Always"
        env_from = clone([*inputs.sidecar_env_from, *inputs.plugin.git_env_from])
        _set_list(container, "envFrom", [*container.get("envFrom", []), *env_from])
        container["volumeMounts"] = [
            *container.get("volumeMounts", []),
            inputs.workspace_mount,
            *clone([*inputs.plugin.extra_volume_mounts, *inputs.sidecar_mounts]),
        ]
        out.append(container)
    return out


def agent_container(inputs: Inputs, *, command_count: int) -> dict[str, Any]:
    count = command_count + (0 if _skip_checkout(inputs) else 1)
    return {
        "name": "agent",
        "image": inputs.config.image,
        "args": ["start"],
        "workingDir": "/workspace",
        "env": agent_env(inputs, container_count=count),
        "volumeMounts": [
            inputs.workspace_mount,
            *agent_config_mounts(inputs.config.agent_config, role="agent"),
            *clone(inputs.plugin.extra_volume_mounts),
        ],
    }


def checkout_container(inputs: Inputs) -> dict[str, Any] | None:
    if _skip_checkout(inputs):
        return None
    checkout = inputs.checkout
    has_credentials = checkout.git_credentials_secret is not None
    container: dict[str, Any] = {
        "name": "checkout",
        "image": inputs.config.image,
        "command": ["/bin/sh", "-c"],
        "args": [checkout_script(run_as=inputs.run_as, git_credentials=has_credentials)],
        "workingDir": "/workspace",
        "env": [
            _env("BUILDKITE_BOOTSTRAP_PHASES", "plugin,checkout"),
            _env("BUILDKITE_CONTAINER_ID", 0),
            _env("BUILDKITE_SOCKETS_PATH", "/workspace/sockets/checkout"),
        ],
        "volumeMounts": [
            *agent_config_mounts(inputs.config.agent_config, role="checkout"),
            inputs.workspace_mount,
            *clone([*inputs.plugin.extra_volume_mounts, *checkout.extra_volume_mounts]),
            *_checkout_volume_mounts(inputs),
        ],
    }
    _set_list(container, "envFrom", clone([*checkout.env_from, *inputs.plugin.git_env_from]))
    if inputs.run_as is not None:
        container["securityContext"] = dict(ROOT_CONTEXT)
    return container


def checkout_volumes(inputs: Inputs) -> list[dict[str, Any]]:
    """Volumes the checkout container needs: git mirrors and git credentials."""
    if _skip_checkout(inputs):
        return []
    volumes = []
    mirrors = inputs.checkout.git_mirrors
    if mirrors is not None and mirrors.volume:
        volumes.append(clone(mirrors.volume))
    secret = inputs.checkout.git_credentials_secret
    if secret is not None:
        volumes.append({"name": "git-credentials-ro", "secret": clone(secret)})
        volumes.append({"name": "git-credentials", "emptyDir": {"medium": "Memory"}})
    return volumes


def _checkout_volume_mounts(inputs: Inputs) -> list[dict[str, Any]]:
    mounts = []
    mirrors = inputs.checkout.git_mirrors
    if mirrors is not None and mirrors.volume and inputs.git_mirrors_path:
        mounts.append({"name": mirrors.volume["name"], "mountPath": inputs.git_mirrors_path})
    if inputs.checkout.git_credentials_secret is not None:
        mounts.append({"name": "git-credentials-ro", "mountPath": GIT_CREDENTIALS_RO, "readOnly": True})
        mounts.append({"name": "git-credentials", "mountPath": GIT_CREDENTIALS})
    return mounts


def copy_agent_container(inputs: Inputs, *, pull_policy: str) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "copy-agent",
        "image": inputs.config.image,
        "imagePullPolicy": pull_policy,
        "command": ["/bin/sh"],
        "args": ["-cefx", copy_agent_script(inputs.run_as)],
        "volumeMounts": [inputs.workspace_mount],
    }
    if inputs.run_as is not None:
        container["securityContext"] = dict(ROOT_CONTEXT)
    return container


def _skip_checkout(inputs: Inputs) -> bool:
    return bool(inputs.checkout.skip)


def _env(name: str, value: object) -> dict[str, str]:
    return {"name": name, "value": env_value(value)}


def _set_list(container: dict[str, Any], key: str, items: list[Any]) -> None:
    # Leave the key out rather than emit an empty list, as Go's omitempty does.
    if items:
        container[key] = items
    else:
        container.pop(key, None)
