"""Model routing as a library: aliases, fallbacks, retries, breakers and providers.

The inference service serves it over gRPC; the gateway runs it in-process for
the aliases it routes itself (LLMOPS_ROUTING, docs/chat.md#where-routing-runs).
"""
