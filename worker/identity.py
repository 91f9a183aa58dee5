"""The email-userId tie that the destination learns and the source uses.

The source's map stage keeps email -> userId in its table. When the source runs in the same
process and that process holds the email's partition, the destination's intake writes the tie
into that table at once (`Destination._tell`: the row, and its changelog record sent with the
batch). Otherwise it writes an identity record (`identity_record`) keyed by the lowercased email
onto the source's internal topic, and the map stage that holds the partition writes the row.
Records on that topic say what they are in the `KIND_HEADER`.

`ToldIdentities`: what the destination has told the source about each email, so that it tells
only news.

Nearly every Segment call ties an email to a userId, and a contact's calls repeat the same tie:
telling each one would cost an internal record for the source to read back, only to find it
knew. An identity counts as told once the intake returns its record: the batch hands it to the
producer and Kafka acknowledges it, or the worker exits (a failed send, a fatal error),
forgetting this with it. A restart, or an email pushed out by newer ones, tells it once more.

Within a process this is exact. Across processes it is not: an email two workers tie to two
userIds is learned as whichever was told last, and a worker does not repeat a tie it told
already, though another worker may have told the source otherwise in between. Likewise an
identity record still unread when a rebalance brings its partition to the process that writes
ties in place is applied when read, after ties written since.
"""

from __future__ import annotations

import orjson

from worker.pipeline.records import OutboundRecord

__all__ = [
    "KIND_EMAIL_EVENT",
    "KIND_HEADER",
    "KIND_IDENTITY",
    "KIND_ORTTO_ACTIVITY",
    "ToldIdentities",
    "identity_record",
    "identity_user_id",
]

#: On internal topics, says what a record is (`email-event`, `ortto-activity`, `identity`).
KIND_HEADER = "__autopilot.kind"
KIND_EMAIL_EVENT = b"email-event"
KIND_ORTTO_ACTIVITY = b"ortto-activity"
KIND_IDENTITY = b"identity"


def identity_record(topic: str, email: str, user_id: str) -> OutboundRecord:
    """What the destination's intake writes on `topic` when a call ties `email` to `user_id`."""
    return OutboundRecord(
        topic=topic,
        key=email.lower().encode(),
        value=orjson.dumps({"user_id": user_id}),
        headers=[(KIND_HEADER, KIND_IDENTITY)],
    )


def identity_user_id(value: bytes) -> str:
    """The userId an identity record's value names."""
    user_id: str = orjson.loads(value)["user_id"]
    return user_id


class ToldIdentities:
    """The userId last told the source per lowercased email, for the latest `capacity` emails."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._user_by_email: dict[str, str] = {}

    def is_news(self, email: str, user_id: str) -> bool:
        """Whether this process has not lately told the source that `email` is `user_id`'s."""
        return self._user_by_email.get(email) != user_id

    def told(self, email: str, user_id: str) -> None:
        """Remember that the record tying `email` to `user_id` went to the producer."""
        told = self._user_by_email
        told.pop(email, None)  # the latest tie goes last, the oldest goes first
        told[email] = user_id
        if len(told) > self._capacity:
            del told[next(iter(told))]
