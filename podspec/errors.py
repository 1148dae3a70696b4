"""Errors raised while turning a job into a pod.

    BuildError            the job cannot get a pod; the message is shown to the user in the
                          Buildkite job log, so it names the field path and says what to do.
"""

from __future__ import annotations


class BuildError(ValueError):
    """A job's configuration cannot become a valid pod.

    ``field`` is a dotted path into the pipeline step, e.g. ``kubernetes.podSpec.containers[1].image``.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)
