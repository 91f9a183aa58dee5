"""Helpers of the reliability suite (`tests/integration/test_reliability*.py`, issue 8).

- `inputs`: the mixed stream (valid and invalid Autopilot events and Segment calls, each with
  its expected fate) and the fuzzed bad inputs.
- `ledger`: accounts for every input by messageId in the outputs or by trace in the dead
  letters; counts duplicates; names what is lost.
- `supervisor`: runs the worker as a supervisor would (restart on exit), kills it with -9 on
  request, scans its log for crashes.
- `stream`: produces the inputs, waits for the worker to commit everything, builds the ledger.
- `topics`: reads whole topics, lists them, waits for a consumer group to catch up.
- `report`: prints the figures of a run and appends them to `$RELIABILITY_RESULTS` if set.
"""
