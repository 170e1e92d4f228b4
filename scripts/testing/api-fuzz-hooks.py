"""schemathesis hooks for scripts/testing/api-fuzz.sh.

Names (topics, consumer groups, users) may hold `%` (`%RETRY%{group}`), so the
document's name pattern allows it, and schemathesis generates path values such
as `z4sd240%01rWN`. Before sending, it percent-decodes each path value "to keep
quoting idempotent" and quotes the result, so that value reaches the server as
`%01`, i.e. the name `z4sd240\\x01rWN`, which the server rightly refuses (400):
the request sent is not the one generated. Such values are dropped here; names
with a `%` not followed by two hex digits are still generated and sent as
`%25`.

A timer's `deliver_at` may be at most `consumer.max_delay` (7 days) after the
server's clock; beyond, 400. A bound relative to the clock cannot be written in
the document, so generated values past it are moved inside it here (the 400 is
tested in broker/tests/http_timers.rs).
"""

import re
import time

import schemathesis

ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


@schemathesis.hook
def filter_path_parameters(context, path_parameters):
    return not any(
        isinstance(value, str) and ESCAPE.search(value)
        for value in (path_parameters or {}).values()
    )


MAX_DELAY_MS = 7 * 24 * 3600 * 1000


@schemathesis.hook
def map_body(context, body):
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        horizon = int(time.time() * 1000) + MAX_DELAY_MS - 60_000
        for message in body["messages"]:
            if isinstance(message, dict):
                at = message.get("deliver_at")
                if isinstance(at, int) and not isinstance(at, bool) and at > horizon:
                    message["deliver_at"] = at % horizon
    return body
