"""Destination APIs, one folder each; what the API-neutral features ask of them is `seam`.

`worker.destination` turns a Segment call into request descriptors with its backend's mapping,
and `worker.delivery` performs them with its backend's auth header, bulk planning, response
settling, retry hints and probe. Neither names an API's path, field or header; the composition
root picks the backend.
"""
