"""buildkite-controller: the service that turns Buildkite jobs into agent pods."""
