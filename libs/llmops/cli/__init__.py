"""The `llmops` command line: run the local platform and talk to it."""
