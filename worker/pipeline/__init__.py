"""The framework-free per-message core: records, a stage, the breaker, dead letters, replay, logs.

Nothing here imports faust or Kafka clients: every piece runs in a unit test as it runs in the
worker. Layers only look down (tests/unit/test_layers.py): this package may use the contracts
(`worker.models`, `worker.errors`, `worker.settings`, `worker.topics`) and nothing above them.
"""
