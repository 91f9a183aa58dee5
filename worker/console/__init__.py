"""The console: the worker's Event Delivery page, what a Segment user looks at when something
fails (counts per pipeline and destination over the last hour and day, delivery state, the
recent failures with their payloads, search, replay). Built by `build_console`
(`worker.console.routes`), which the composition root calls in every process.
"""
