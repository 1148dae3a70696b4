"""Adapters for Buildkite: webhook signature and parsing (pure), the GraphQL client and the agent API client.

signature   verify(headers, body, …)        X-Buildkite-Signature / X-Buildkite-Token checks
webhook     parse_event(event, body, …)     webhook JSON → WebhookEvent
queries     build_*/parse_* and JobRecord   GraphQL documents and response parsing (pure)
retry       RetryPolicy, RetryLoop          back-off, Retry-After and the rate budget
graphql     GraphQLClient                   confirm_jobs, scheduled_jobs, job_states
agent_api   AgentAPI, FailOutcome           fail_job through a throw-away agent
agent_log   failure_log, split_chunks       the failed job's log text and its gzip chunks (pure)
"""
