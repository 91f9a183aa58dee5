"""Ortto's activity webhook: the body its 'Webhook (advanced)' data source posts (topic
`ortto.activities`), and what the worker knows of its activities.

Ortto's format, not ours. Fired from journeys, playbooks and activities, with 'Send activity
payload if relevant' checked, a delivery is one such object (or, to the worker's route, an array
of them); Ortto signs nothing, so the route checks a token given as basic auth or a header:

    {"id": "00651b946cef87c7af64f4f3", "time": "2023-10-03T04:11:24.25726779Z",
     "webhook_id": "651b8aec8002153e16319fd3",
     "activity": {"id": "00651b946bfef7e80478efee", "field_id": "act::o",
                  "created": "2023-10-03T04:11:23Z", "attr": {"str::is": "API"}},
     "contact": {"contact_id": "00651b946baa9be6b2edad00", "external_id": "user_x",
                 "email": "abhi@example.com", "first_name": "Abhi", "last_name": "K", ...}}

What the worker reads of it is in `worker.source.ortto`. Ortto publishes the field ids of its
email activities (`EMAIL_ACTIVITIES`) and of the Test button's delivery, and nothing more: spam
complaints and replies have no published field id, and which `attr` keys carry the campaign,
the email and the link is not published either (ORTTO_ACTIVITY_EVENTS and
ORTTO_ATTRIBUTE_PROPERTIES name them once they are known).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = ["EMAIL_ACTIVITIES", "TEST_WEBHOOK_FIELD_ID"]

TEST_WEBHOOK_FIELD_ID: Final = "act::test_webhook"
"""`activity.field_id` of the delivery Ortto's Test button sends: answered, never mapped."""

EMAIL_ACTIVITIES: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "act::s": ("email_sent", "Email Sent"),
        "act::r": ("email_delivered", "Email Delivered"),
        "act::o": ("email_opened", "Email Opened"),
        "act::c": ("email_clicked", "Email Clicked"),
        "act::b": ("email_bounced", "Email Bounced"),
        "act::u-all": ("email_unsubscribed", "Email Unsubscribed"),
    }
)
"""Ortto's email activities by `activity.field_id` (Sent email, Received email, Opened email,
Clicked email (one per link click), Bounced email, Unsubscribed from all email) -> (the
canonical type, as `properties.event`; the Segment event name)."""
