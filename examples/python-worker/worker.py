#!/usr/bin/env python3
"""A jobstream worker in Python: takes jobs through the wire protocol (README, "Wire protocol").

    pip install nats-py==2.16.0         # or: scripts/install-python-tools.sh (into .tools/python)
    python3 worker.py --nats-url nats://127.0.0.1:4222 --queue python

It serves the custom kind `text.reverse` (declare it to the API in a kinds file,
see examples/python-worker/kinds.json): payload {"text": "..."} -> result
{"reversed": "...", "words": N, "worker": "python"}. Add handlers to HANDLERS.

The protocol, in short:
1. Bind to the durable pull consumer `worker-<queue>` of stream `JOBS`
   (filter `jobs.<queue>.*.queued`, explicit ack), creating it if missing.
2. attempt = the message's delivery count. If attempt > 1 and the job already has
   a terminal event, ack and skip (its outcome was stored, the ack was lost).
3. Publish `started` to `jobs.<queue>.<job_id>.started` (Nats-Msg-Id = event id) and
   wait for the PubAck; send in-progress acks every ack_wait/3 while running.
4. Publish the outcome (`succeeded`, `retrying`, `failed`), wait for the PubAck, then
   ack / nak(delay) / term. Never ack before the outcome is stored.
"""

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sys
import time
import uuid
from datetime import datetime, timezone

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

SCHEMA_VERSION = 1
REQUEST_ID_HEADER = "Jobstream-Request-Id"
TERMINAL = ("succeeded", "failed", "cancelled")


class Fatal(Exception):
    """Raise from a handler when the job can never succeed: it fails at once, no retry."""


async def text_reverse(payload, ctx):
    text = payload.get("text")
    if not isinstance(text, str):
        raise Fatal("payload.text must be a string")
    return {"reversed": text[::-1], "words": len(text.split()), "worker": "python", "attempt": ctx["attempt"]}


HANDLERS = {"text.reverse": text_reverse}


def uuid7():
    """A UUIDv7: 48-bit Unix milliseconds, version 7, variant 10, random bits."""
    ms = time.time_ns() // 1_000_000
    rand = random.getrandbits(74)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 62) << 64  # 12 bits rand_a
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def now():
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Worker:
    def __init__(self, js, stream, queue, worker_id, ack_wait, backoff_base):
        self.js, self.stream, self.queue = js, stream, queue
        self.worker_id, self.ack_wait, self.backoff_base = worker_id, ack_wait, backoff_base

    async def publish(self, job_id, attempt, event_type, fields, request_id):
        event_id = str(uuid7())
        envelope = {"v": SCHEMA_VERSION, "event_id": event_id, "job_id": job_id, "at": now(),
                    "attempt": attempt, "type": event_type, **fields}
        headers = {"Nats-Msg-Id": event_id}
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        subject = f"jobs.{self.queue}.{job_id}.{event_type}"
        # js.publish waits for the server's PubAck: the event is stored when it returns.
        await self.js.publish(subject, json.dumps(envelope).encode(), headers=headers)

    async def already_finished(self, job_id):
        for t in TERMINAL:
            try:
                await self.js.get_last_msg(self.stream, f"jobs.{self.queue}.{job_id}.{t}")
                return True
            except NotFoundError:
                pass
        return False

    async def heartbeat(self, msg):
        every = max(self.ack_wait / 3, 0.1)
        while True:
            await asyncio.sleep(every)
            await msg.in_progress()

    async def process(self, msg):
        try:
            env = json.loads(msg.data)
        except ValueError:
            print(f"undecodable message {msg.subject}; terminated", file=sys.stderr)
            await msg.term()
            return
        if env.get("v", 0) > SCHEMA_VERSION or env.get("type") != "queued":
            print(f"unexpected envelope on {msg.subject}; terminated", file=sys.stderr)
            await msg.term()
            return
        job_id, kind = env["job_id"], env["kind"]
        attempt = msg.metadata.num_delivered
        max_attempts = env.get("max_attempts", 1)
        request_id = (msg.headers or {}).get(REQUEST_ID_HEADER)
        if attempt > 1 and await self.already_finished(job_id):
            await msg.ack_sync()
            return
        if attempt > max_attempts:
            await self.publish(job_id, attempt, "failed",
                               {"error": f"gave up after {attempt - 1} deliveries"}, request_id)
            await msg.term()
            return
        handler = HANDLERS.get(kind)
        if handler is None:
            await self.publish(job_id, attempt, "failed",
                               {"error": f"no handler for kind {kind!r} on {self.worker_id}"}, request_id)
            await msg.term()
            return
        await self.publish(job_id, attempt, "started", {"worker": self.worker_id}, request_id)
        beat = asyncio.create_task(self.heartbeat(msg))
        ctx = {"job_id": job_id, "attempt": attempt, "max_attempts": max_attempts, "owner": env.get("owner")}
        try:
            result = await asyncio.wait_for(handler(env.get("payload"), ctx), env.get("timeout_ms", 60000) / 1000)
            outcome = ("succeeded", {"result": result})
        except Fatal as e:
            outcome = ("failed", {"error": f"fatal: {e}"})
        except Exception as e:  # noqa: BLE001 - any other error is retried per the job's policy
            error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if attempt >= max_attempts:
                outcome = ("failed", {"error": error})
            else:
                delay_ms = int(self.backoff_base * 1000 * 2 ** (attempt - 1))
                outcome = ("retrying", {"error": error, "retry_in_ms": delay_ms})
        finally:
            beat.cancel()
        event_type, fields = outcome
        await self.publish(job_id, attempt, event_type, fields, request_id)
        if event_type == "succeeded":
            await msg.ack_sync()
        elif event_type == "retrying":
            await msg.nak(delay=fields["retry_in_ms"] / 1000)
        else:
            await msg.term()
        print(f"job {job_id} ({kind}) attempt {attempt}: {event_type}", file=sys.stderr, flush=True)


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--stream", default=os.environ.get("JOBSTREAM_STREAM", "JOBS"))
    p.add_argument("--queue", default=os.environ.get("WORKER_QUEUE", "python"))
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--ack-wait", type=float, default=30.0, help="seconds")
    p.add_argument("--backoff-base", type=float, default=1.0, help="seconds")
    args = p.parse_args()

    worker_id = f"py-{socket.gethostname()}-{os.getpid()}"
    nc = await nats.connect(args.nats_url, name=worker_id)
    js = nc.jetstream()
    durable = f"worker-{args.queue}"
    sub = await js.pull_subscribe(
        f"jobs.{args.queue}.*.queued", durable=durable, stream=args.stream,
        config=ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
                              deliver_policy=DeliverPolicy.ALL, ack_wait=args.ack_wait, max_deliver=-1,
                              filter_subject=f"jobs.{args.queue}.*.queued"))
    w = Worker(js, args.stream, args.queue, worker_id, args.ack_wait, args.backoff_base)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    slots = asyncio.Semaphore(args.concurrency)
    running = set()
    print(f"{worker_id} serving queue {args.queue!r}: {', '.join(HANDLERS)}", file=sys.stderr, flush=True)
    while not stop.is_set():
        await slots.acquire()
        try:
            msgs = await sub.fetch(1, timeout=1)
        except NatsTimeout:
            slots.release()
            continue
        for msg in msgs:
            task = asyncio.create_task(w.process(msg))
            running.add(task)
            task.add_done_callback(lambda t: (running.discard(t), slots.release()))
    # Stop pulling; let running jobs finish (their messages are redelivered if we are killed).
    if running:
        await asyncio.wait(running, timeout=25)
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main())
