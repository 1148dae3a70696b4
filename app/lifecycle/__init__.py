"""The pod lifecycle: what happens to an agent pod after it is created, until it is gone.

Read in this order:

    decide.py      the pure rules: (pod, Buildkite job state, now, policy) -> Keep | CheckJobState |
                   FailJob | Notify | Delete
    failures.py    the detectors the rules use (image pulls, init containers, Pending too long, lost pods)
    messages.py    the text a user reads in the Buildkite job log (tables, events)
    runner.py      the shell: follows the pod watch, keeps timers, asks Buildkite for job states in
                   batches (job_states.py), and carries decisions out (actions.py); leader only
"""

from app.lifecycle.decide import (
    AGENT_OWNED_STATES,
    CANCELLED_STATES,
    ENDED_STATES,
    FAILABLE_STATES,
    REASONS,
    Action,
    CheckJobState,
    Delete,
    FailJob,
    Keep,
    LifecyclePolicy,
    Notify,
    decide,
)

__all__ = [
    "AGENT_OWNED_STATES",
    "CANCELLED_STATES",
    "ENDED_STATES",
    "FAILABLE_STATES",
    "REASONS",
    "Action",
    "CheckJobState",
    "Delete",
    "FailJob",
    "Keep",
    "LifecyclePolicy",
    "Notify",
    "decide",
]
