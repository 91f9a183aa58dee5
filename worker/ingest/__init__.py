"""Ingest: HTTP endpoints on the worker's web server that write onto the input topics.

Real clients feed the worker without a Kafka producer of their own:

    POST /v1/identify|track|page|screen|group|alias|batch   Segment HTTP Tracking API
    POST /v1/i|t|p|s|g|a|b, /b                              Segment's browser and mobile SDKs
                                                            -> settings.topic_segment_calls
    POST /autopilot/events                                  Autopilot webhook
                                                            -> settings.topic_email_events
    POST /ortto/webhook                                     Ortto's activity webhook
                                                            -> settings.topic_ortto_activities

Every error answer is JSON, `{"success": false, "code", "message"}`, the router's 404 and 405
included.

A request is answered 200 only after Kafka acknowledged (acks=all) every message it carried;
when Kafka cannot take them within INGEST_KAFKA_TIMEOUT_S the answer is 503 and the client
retries (delivery is at-least-once: a message stored just before the timeout may be stored
again by the retry, with the same messageId when the client set one).

Modules, one concept each; everything but `routes` is pure and tested without Kafka:

    problems            the closed set of rejections and their JSON bodies (400-503)
    body                reading a capped body, gzip, JSON
    auth                Segment write keys (Basic or body `writeKey`), the webhook tokens
    segment_api         Segment messages: limits, messageId, receivedAt, timestamp, batch merge
    autopilot_webhook   Autopilot events -> records keyed by lowercased contact email
    ortto_webhook       Ortto activities -> records of their original bytes, keyed the same;
                        Ortto's test deliveries answered, counted, not written
    storing             awaiting Kafka's acks within a deadline, failures as 503
    routes              the aiohttp handlers, mounted on faust's web server at import
"""
