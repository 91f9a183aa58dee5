"""Commands beside the worker: the `dlq` and `map` CLIs, the JSON Schema writer, and the
stand-in Autopilot API (a real HTTP server for `make run`, the demo and the tests)."""
