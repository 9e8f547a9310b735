#!/usr/bin/env python3
"""Prints orderflow's events from JetStream, decoded with the classes generated from proto/.

    python events.py --nats-url nats://127.0.0.1:4222
    NATS_USER=events-reader NATS_PASSWORD_FILE=reader.pw python events.py

Connects like the services do, with the same variables (docs/configuration.md,
"NATS credentials and TLS"), each also a flag: NATS_URL, NATS_USER with
NATS_PASSWORD or NATS_PASSWORD_FILE, NATS_TOKEN or NATS_TOKEN_FILE,
NATS_NKEY_SEED_FILE, NATS_CREDS_FILE, NATS_TLS_REQUIRED, NATS_TLS_CA_FILE,
NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE. Replies come to the inbox
_INBOX.<NATS_USER> (NATS_INBOX_PREFIX to change it), the one a least-privilege
user such as deploy/nats/auth.conf's events-reader may subscribe to.

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
import json
import os
import ssl
import sys
import time
from typing import Any, Dict, List, Optional
from urllib.parse import urlparse

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


def env_bool(name: str) -> bool:
    """A yes/no variable read as the services read it (true/false, 1/0, yes/no); anything else stops the reader."""
    value = os.environ.get(name, "false").strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    sys.exit(f"error: {name}={value!r}: expected true or false (also 1/0, yes/no)")


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
    # units and nanos share their sign (google.type.Money), and -0.50 has
    # units 0: the sign is taken from either.
    sign = "-" if money.units < 0 or money.nanos < 0 else ""
    amount = f"{abs(money.units)}.{abs(money.nanos):09d}".rstrip("0").rstrip(".")
    return f"{sign}{amount}{money.currency_code}"


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


class ConfigError(Exception):
    """A bad or contradictory credential or TLS option."""


def read_secret(path: str, what: str) -> str:
    """A secret from a file, trailing newlines ignored (as a mounted Secret often has one)."""
    try:
        with open(path, encoding="utf-8") as file:
            value = file.read().rstrip("\r\n")
    except OSError as error:
        raise ConfigError(f"{what}: cannot read {path}: {error.strerror}") from error
    if not value:
        raise ConfigError(f"{what}: {path} is empty")
    return value


def readable(path: str, what: str) -> str:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ConfigError(f"{what}: {path} is not a readable file")
    return path


def connect_options(args: argparse.Namespace) -> Dict[str, Any]:
    """nats.connect's credential and TLS arguments, from the flags and variables."""
    options: Dict[str, Any] = {}
    methods = []
    if args.nats_password and args.nats_password_file:
        raise ConfigError("NATS_PASSWORD and NATS_PASSWORD_FILE: give only one")
    if args.nats_token and args.nats_token_file:
        raise ConfigError("NATS_TOKEN and NATS_TOKEN_FILE: give only one")
    password = args.nats_password or (
        read_secret(args.nats_password_file, "NATS_PASSWORD_FILE") if args.nats_password_file else None
    )
    if args.nats_user or password:
        if not (args.nats_user and password):
            raise ConfigError("NATS_USER needs NATS_PASSWORD or NATS_PASSWORD_FILE, and a password needs NATS_USER")
        options.update(user=args.nats_user, password=password)
        methods.append("NATS_USER")
    token = args.nats_token or (read_secret(args.nats_token_file, "NATS_TOKEN_FILE") if args.nats_token_file else None)
    if token:
        options["token"] = token
        methods.append("NATS_TOKEN")
    if args.nats_nkey_seed_file:
        options["nkeys_seed"] = readable(args.nats_nkey_seed_file, "NATS_NKEY_SEED_FILE")
        methods.append("NATS_NKEY_SEED_FILE")
    if args.nats_creds_file:
        options["user_credentials"] = readable(args.nats_creds_file, "NATS_CREDS_FILE")
        methods.append("NATS_CREDS_FILE")
    if len(methods) > 1:
        raise ConfigError(f"{' and '.join(methods)}: give one way to log in")

    if bool(args.nats_tls_cert_file) != bool(args.nats_tls_key_file):
        raise ConfigError("NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE go together")
    if tls_required(args):
        try:
            context = ssl.create_default_context(
                cafile=readable(args.nats_tls_ca_file, "NATS_TLS_CA_FILE") if args.nats_tls_ca_file else None
            )
            if args.nats_tls_cert_file:
                context.load_cert_chain(
                    readable(args.nats_tls_cert_file, "NATS_TLS_CERT_FILE"),
                    readable(args.nats_tls_key_file, "NATS_TLS_KEY_FILE"),
                )
        except ssl.SSLError as error:
            raise ConfigError(f"NATS TLS files: {error}") from error
        options["tls"] = context

    prefix = args.nats_inbox_prefix or (f"_INBOX.{args.nats_user}" if args.nats_user else "_INBOX")
    options["inbox_prefix"] = prefix
    return options


def servers(url: str) -> List[str]:
    return [part.strip() for part in url.split(",") if part.strip()]


def tls_required(args: argparse.Namespace) -> bool:
    return bool(
        args.nats_tls_required
        or args.nats_tls_ca_file
        or args.nats_tls_cert_file
        or any(urlparse(server).scheme == "tls" for server in servers(args.nats_url))
    )


async def server_requires_tls(server: str, timeout: float) -> bool:
    """Whether the server's greeting (INFO, sent before anything else) asks for TLS.

    nats-py upgrades to TLS only when the server requires it; checking first
    means no credential is ever sent in the clear to a server that does not.
    """
    parsed = urlparse(server if "://" in server else f"nats://{server}")
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout
    )
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    if not line.startswith(b"INFO "):
        return False
    try:
        info = json.loads(line[len(b"INFO ") :])
    except ValueError:
        return False
    return bool(info.get("tls_required"))


async def run(args: argparse.Namespace) -> int:
    registry = build_registry()
    try:
        options = connect_options(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    async def quiet(error: Exception) -> None:
        # nats-py reports every failed attempt through this callback (by default
        # with a traceback); a failure to connect is reported once, below. A
        # refused subject is worth saying: the user lacks a permission.
        if "permissions violation" in str(error).lower():
            print(f"error: NATS: {error}", file=sys.stderr)

    try:
        usable = servers(args.nats_url)
        if "tls" in options:
            # Only the servers that answered asking for TLS are connected to: one
            # that is down now is left out (as nats-py would skip it), so it can
            # never be the one a credential goes to in the clear later.
            usable = []
            for server in servers(args.nats_url):
                try:
                    requires = await server_requires_tls(server, min(args.timeout, 5.0))
                except (OSError, asyncio.TimeoutError):
                    continue
                if not requires:
                    print(
                        f"error: TLS is required (NATS_TLS_* or a tls:// URL), but {server} does not use TLS",
                        file=sys.stderr,
                    )
                    return 1
                usable.append(server)
            if not usable:
                raise OSError("no server answered")
        nc = await nats.connect(
            usable,
            connect_timeout=min(args.timeout, 5.0),
            max_reconnect_attempts=1,  # try each server twice, then give up
            reconnect_time_wait=0.5,
            allow_reconnect=False,
            error_cb=quiet,
            name="orderflow-events-py",
            **options,
        )
    except (NoServersError, OSError, asyncio.TimeoutError) as error:
        print(
            f"error: cannot connect to NATS at {args.nats_url}: {error or type(error).__name__}; "
            "is nats-server running, --nats-url right, and the credentials those of a user of the server?",
            file=sys.stderr,
        )
        return 1
    except nats.errors.Error as error:
        # A refused login ends here: "nats: 'Authorization Violation'".
        print(f"error: NATS at {args.nats_url} refused the connection: {error}", file=sys.stderr)
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
    parser = argparse.ArgumentParser(
        description="Print orderflow's events from JetStream (streams ORDERS and PAYMENTS).",
        epilog="Each --nats-* option defaults to the variable of the same name in capitals "
        "(--nats-user: NATS_USER), the ones the services read.",
    )
    env = os.environ.get
    parser.add_argument("--nats-url", default=env("NATS_URL", "nats://127.0.0.1:4222"),
                        help="NATS server URL, or a comma-separated list (default: %(default)s)")
    parser.add_argument("--nats-user", default=env("NATS_USER"), help="NATS user name")
    parser.add_argument("--nats-password", default=env("NATS_PASSWORD"),
                        help="its password (prefer --nats-password-file: a flag is visible to anyone who lists processes)")
    parser.add_argument("--nats-password-file", default=env("NATS_PASSWORD_FILE"), help="a file holding the password")
    parser.add_argument("--nats-token", default=env("NATS_TOKEN"), help="an authentication token")
    parser.add_argument("--nats-token-file", default=env("NATS_TOKEN_FILE"), help="a file holding the token")
    parser.add_argument("--nats-nkey-seed-file", default=env("NATS_NKEY_SEED_FILE"), help="a file holding an NKey seed (SU...)")
    parser.add_argument("--nats-creds-file", default=env("NATS_CREDS_FILE"), help="a .creds file (user JWT and NKey seed)")
    parser.add_argument("--nats-tls-required", action="store_true",
                        default=env_bool("NATS_TLS_REQUIRED"),
                        help="refuse a server without TLS (implied by a tls:// URL and the TLS files)")
    parser.add_argument("--nats-tls-ca-file", default=env("NATS_TLS_CA_FILE"),
                        help="PEM CA bundle of the server's certificate (default: the system's roots)")
    parser.add_argument("--nats-tls-cert-file", default=env("NATS_TLS_CERT_FILE"), help="client certificate (mutual TLS)")
    parser.add_argument("--nats-tls-key-file", default=env("NATS_TLS_KEY_FILE"), help="its private key")
    parser.add_argument("--nats-inbox-prefix", default=env("NATS_INBOX_PREFIX"),
                        help="subject prefix of reply inboxes (default: _INBOX.<user> with a user, else _INBOX)")
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
