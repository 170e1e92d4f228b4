#!/usr/bin/env python3
"""Load for scripts/testing/rolling-upgrade.sh, then the check.

`send`: sends one message per request to TOPIC (bodies "m-<n>", n counting up),
across all node URLs in turn (a follower forwards to the leader), until STOP_FILE
exists; writes one JSON line per acknowledged message (its body, queue and queue
offset, as the 200 answer named them) to OUT. A request that fails or times out is
not acknowledged and not recorded (its outcome is unknown); it counts as an error.

`check`: reads every recorded message back by its queue and offset, from every node
in turn, and fails if one is missing or holds another body. It also fails when
fewer than MIN acknowledged messages were recorded, so a run that sent nothing
cannot pass.

Standard library only: the CI machine has python3 and nothing else is installed for
this.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request


def call(method, url, token, body=None, timeout=5.0):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.load(answer)


def send(args, token):
    sent = errors = 0
    n = 0
    started = time.monotonic()
    with open(args.out, "w", encoding="utf-8") as out:
        while not os.path.exists(args.stop_file):
            url = args.urls[n % len(args.urls)]
            body = f"m-{n}"
            n += 1
            try:
                answer = call(
                    "POST",
                    f"{url}/v1/topics/{args.topic}/messages",
                    token,
                    {"messages": [{"body": body}]},
                )
                result = answer["results"][0]
                out.write(
                    json.dumps(
                        {
                            "body": body,
                            "queue_id": result["queue_id"],
                            "queue_offset": result["queue_offset"],
                        }
                    )
                    + "\n"
                )
                out.flush()
                sent += 1
            except (urllib.error.URLError, OSError, KeyError, ValueError) as e:
                errors += 1
                if errors % 20 == 1:
                    print(f"upgrade-load: send to {url} failed: {e}", file=sys.stderr)
                time.sleep(0.05)
    seconds = time.monotonic() - started
    print(
        f"upgrade-load: {sent} acknowledged, {errors} failed or unknown, "
        f"{seconds:.1f} s"
    )


def check(args, token):
    with open(args.out, encoding="utf-8") as recorded:
        acked = [json.loads(line) for line in recorded if line.strip()]
    if len(acked) < args.min:
        sys.exit(f"upgrade-check: only {len(acked)} acknowledged messages (< {args.min})")
    missing = []
    for i, message in enumerate(acked):
        url = args.urls[i % len(args.urls)]
        path = (
            f"/v1/topics/{args.topic}/queues/{message['queue_id']}/messages"
            f"?offset={message['queue_offset']}&max_messages=1"
        )
        try:
            answer = call("GET", url + path, token)
            bodies = [m.get("body") for m in answer.get("messages", [])]
        except (urllib.error.URLError, OSError, ValueError) as e:
            bodies = [f"<{url}: {e}>"]
        if bodies[:1] != [message["body"]]:
            missing.append((message, bodies[:1]))
    if missing:
        for message, found in missing[:20]:
            print(f"upgrade-check: {message} read back as {found}", file=sys.stderr)
        sys.exit(f"upgrade-check: {len(missing)} of {len(acked)} acknowledged messages lost")
    print(f"upgrade-check: all {len(acked)} acknowledged messages read back")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["send", "check"])
    parser.add_argument("--urls", required=True, help="comma-separated node URLs")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--topic", default="upgrade")
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop-file", default="")
    parser.add_argument("--min", type=int, default=200)
    args = parser.parse_args()
    args.urls = [u.rstrip("/") for u in args.urls.split(",") if u]
    with open(args.token_file, encoding="utf-8") as f:
        token = f.read().strip()
    if args.mode == "send":
        send(args, token)
    else:
        check(args, token)


if __name__ == "__main__":
    main()
