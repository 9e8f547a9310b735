#!/usr/bin/env python3
"""Prints orderflow's events from JetStream, decoded with the classes generated from proto/.

    python events.py --nats-url nats://127.0.0.1:4222

Reads the streams ORDERS and PAYMENTS from their first message through an
ephemeral pull consumer (no acks, kept in memory, deleted when done, and removed
by the server anyway after a short inactivity), so it leaves nothing behind and
never disturbs the services' own durable consumers.

Each event's body is the protobuf message named by its `ce-type` header (for
example `orderflow.order.v1.OrderCreated`); its `traceparent` header carries the
W3C trace context of the call that caused it. One line is printed per event:

    <stream> <subject> <ce-type> trace=<trace id> <summary>

Run generate.sh first: the classes are imported from gen/.
"""

import argparse
import asyncio
import importlib
import os
import sys
import time
from typing import Dict, Optional

GEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen")
sys.path.insert(0, GEN)

try:
    import nats
    from google.protobuf.message import DecodeError, Message
    from nats.errors import NoServersError
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js import api
    from nats.js.errors import NotFoundError
except ImportError as error:  # pragma: no cover - set-up problem
    sys.exit(f"error: {error}. Install the requirements: pip install -r requirements.txt")

STREAMS = ("ORDERS", "PAYMENTS")


def build_registry() -> Dict[str, type]:
    """Maps every message's full protobuf name to its class, from all generated *_pb2 modules."""
    registry: Dict[str, type] = {}
    for root, _dirs, files in os.walk(GEN):
        for file in sorted(files):
            if not file.endswith("_pb2.py"):
                continue
            relative = os.path.relpath(os.path.join(root, file[: -len(".py")]), GEN)
            module = importlib.import_module(relative.replace(os.sep, "."))
            for name, descriptor in module.DESCRIPTOR.message_types_by_name.items():
                registry[descriptor.full_name] = getattr(module, name)
    if not registry:
        sys.exit(f"error: no generated modules in {GEN}; run ./generate.sh first")
    return registry


def header(headers: Optional[Dict[str, str]], name: str) -> Optional[str]:
    """Header lookup that ignores case (NATS headers keep the sender's spelling)."""
    if not headers:
        return None
    if name in headers:
        return headers[name]
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def trace_id(traceparent: Optional[str]) -> str:
    """The trace id of a W3C traceparent: version-traceid-spanid-flags."""
    if not traceparent:
        return "-"
    parts = traceparent.strip().split("-")
    return parts[1] if len(parts) >= 4 else f"invalid({traceparent})"


def money_text(money: Message) -> str:
    amount = f"{money.units}.{abs(money.nanos):09d}".rstrip("0").rstrip(".")
    return f"{amount}{money.currency_code}"


def summary(message: Message) -> str:
    """A short summary of an event: ids, status, amount and reason of the resource it carries."""
    parts = []
    for field, value in message.ListFields():
        if field.message_type is None or field.is_repeated:
            parts.append(f"{field.name}={value}")
            continue
        # Events wrap one resource (Order or Payment); summarize its main fields.
        for name in ("order_id", "payment_id", "customer_id"):
            if name in field.message_type.fields_by_name and getattr(value, name):
                parts.append(f"{name}={getattr(value, name)}")
        if "status" in field.message_type.fields_by_name:
            status = field.message_type.fields_by_name["status"]
            parts.append(f"status={status.enum_type.values_by_number[value.status].name}")
        for name in ("total", "amount"):
            if name in field.message_type.fields_by_name and value.HasField(name):
                parts.append(f"{name}={money_text(getattr(value, name))}")
        for name in ("failure_reason", "decline_reason"):
            if name in field.message_type.fields_by_name and getattr(value, name):
                parts.append(f"{name}={getattr(value, name)!r}")
        if "version" in field.message_type.fields_by_name:
            parts.append(f"version={value.version}")
    return " ".join(parts)


def describe(stream: str, msg, registry: Dict[str, type]) -> str:
    ce_type = header(msg.headers, "ce-type")
    trace = trace_id(header(msg.headers, "traceparent"))
    prefix = f"{stream} {msg.subject} {ce_type or '-'} trace={trace}"
    cls = registry.get(ce_type or "")
    if cls is None:
        return f"{prefix} unknown event type, {len(msg.data)} bytes"
    event = cls()
    try:
        event.ParseFromString(msg.data)
    except DecodeError as error:
        return f"{prefix} undecodable {ce_type}: {error}"
    return f"{prefix} {summary(event)}"


async def read_stream(js, stream: str, registry: Dict[str, type], limit: int, deadline: float) -> int:
    """Prints the stream's events from the first one to the last one present now; returns how many."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        print(f"error: stream {stream} does not exist; has orderflow started on this NATS server?", file=sys.stderr)
        return -1
    last_seq = info.state.last_seq
    if info.state.messages == 0:
        return 0

    name = f"events-py-{os.getpid()}-{stream.lower()}-{time.monotonic_ns()}"
    config = api.ConsumerConfig(
        name=name,  # a name without durable_name: an ephemeral consumer
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.NONE,
        inactive_threshold=30.0,  # the server deletes it if this script dies
        mem_storage=True,
        num_replicas=1,
    )
    await js.add_consumer(stream, config=config)
    printed = 0
    try:
        sub = await js.pull_subscribe_bind(consumer=name, stream=stream)
        try:
            while limit <= 0 or printed < limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    print(f"warning: --timeout reached before the end of {stream}", file=sys.stderr)
                    break
                batch = 256 if limit <= 0 else min(256, limit - printed)
                try:
                    msgs = await sub.fetch(batch=batch, timeout=min(remaining, 2.0))
                except NatsTimeoutError:
                    continue
                done = False
                for msg in msgs:
                    print(describe(stream, msg, registry), flush=True)
                    printed += 1
                    if msg.metadata.sequence.stream >= last_seq or (limit > 0 and printed >= limit):
                        done = True
                        break
                if done:
                    break
        finally:
            await sub.unsubscribe()
    finally:
        try:
            await js.delete_consumer(stream, name)
        except Exception:  # noqa: BLE001 - the server removes it after inactive_threshold anyway
            pass
    return printed


async def run(args: argparse.Namespace) -> int:
    registry = build_registry()

    async def quiet(_error: Exception) -> None:
        # nats-py reports every failed attempt through this callback (by default
        # with a traceback); a failure to connect is reported once, below.
        pass

    try:
        nc = await nats.connect(
            args.nats_url,
            connect_timeout=min(args.timeout, 5.0),
            max_reconnect_attempts=1,  # try each server twice, then give up
            reconnect_time_wait=0.5,
            allow_reconnect=False,
            error_cb=quiet,
        )
    except (NoServersError, OSError, asyncio.TimeoutError) as error:
        print(
            f"error: cannot connect to NATS at {args.nats_url}: {error or type(error).__name__}; "
            "is nats-server running and --nats-url right?",
            file=sys.stderr,
        )
        return 1
    status = 0
    try:
        js = nc.jetstream(timeout=min(args.timeout, 5.0))
        deadline = time.monotonic() + args.timeout
        for stream in STREAMS:
            if await read_stream(js, stream, registry, args.limit, deadline) < 0:
                status = 1
    finally:
        await nc.close()
    return status


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Print orderflow's events from JetStream (streams ORDERS and PAYMENTS).")
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222", help="NATS server URL (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=0, help="print at most N events per stream; 0 means all (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0, help="give up after this many seconds in all (default: %(default)s)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    try:
        return asyncio.run(run(args))
    except NatsTimeoutError:
        print(f"error: NATS did not answer within --timeout {args.timeout}s", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
