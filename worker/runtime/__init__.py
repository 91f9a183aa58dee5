"""The faust shell: the app and what it overrides of faust, batches in and acks out, tables,
placement, metrics and health, topic creation and the building of stages.

Features (`worker.ingest`, `worker.source`, `worker.destination`, `worker.delivery`) run on it;
it knows none of them. It runs the framework-free core (`worker.pipeline`).
"""
