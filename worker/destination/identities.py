"""What the destination has told the source about each email, so that it tells only news.

Nearly every Segment call ties an email to a userId, and a contact's calls repeat the same tie:
telling each one would cost an internal record for the source to read back, only to find it
knew. An identity counts as told once the intake returns its record: the batch hands it to the
producer and Kafka acknowledges it, or the worker exits (a failed send, a fatal error),
forgetting this with it. A restart, or an email pushed out by newer ones, tells it once more.

Within a process this is exact. Across processes it is not: an email two workers tie to two
userIds is learned as whichever was told last, and a worker does not repeat a tie it told
already, though another worker may have told the source otherwise in between.
"""

from __future__ import annotations

__all__ = ["ToldIdentities"]


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
