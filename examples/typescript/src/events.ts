// Prints orderflow's events from JetStream (streams ORDERS and PAYMENTS),
// decoded by their `ce-type` header with the message types of the
// repository's proto/, one line per event:
//
//   <stream> <subject> <ce-type> trace=<trace id> <summary>
//
// Usage:
//   node dist/events.js [--nats-url nats://127.0.0.1:4222] [--limit N] [--timeout 10]
//   NATS_USER=events-reader NATS_PASSWORD_FILE=reader.pw node dist/events.js
//
// It connects like the services do, with the same variables
// (docs/configuration.md, "NATS credentials and TLS"), each also a flag:
// NATS_URL, NATS_USER with NATS_PASSWORD or NATS_PASSWORD_FILE, NATS_TOKEN or
// NATS_TOKEN_FILE, NATS_NKEY_SEED_FILE, NATS_CREDS_FILE, NATS_TLS_REQUIRED,
// NATS_TLS_CA_FILE, NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE. Replies come to
// the inbox _INBOX.<NATS_USER> (NATS_INBOX_PREFIX to change it), the one a
// least-privilege user such as deploy/nats/auth.conf's events-reader may
// subscribe to.
//
// Each stream is read from its first message to the last one present at the
// start through an ordered consumer (no acks, in memory, deleted at the end
// and by the server after a short inactivity anyway), so the reader leaves
// nothing behind and never disturbs the services' durable consumers.
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  connect,
  credsAuthenticator,
  Match,
  nkeyAuthenticator,
  type NatsConnection,
  type NodeConnectionOptions,
} from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import protobuf from "protobufjs";

const STREAMS = ["ORDERS", "PAYMENTS"] as const;

class ConfigError extends Error {}

// proto/ at the repository root; this file runs from examples/typescript/dist.
const PROTO_DIR = fileURLToPath(new URL("../../../proto", import.meta.url));

function protoFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return protoFiles(path);
    return entry.name.endsWith(".proto") ? [relative(PROTO_DIR, path)] : [];
  });
}

// Every message type of proto/, by its full name: the `ce-type` of the events
// that carry it. protobufjs (the library under the client's
// @grpc/proto-loader) builds them from the .proto files at start, so they can
// never be older than the contract; the google/protobuf imports are bundled
// with it.
function loadTypes(): protobuf.Root {
  const files = protoFiles(PROTO_DIR).sort();
  if (files.length === 0) throw new ConfigError(`no .proto files under ${PROTO_DIR}`);
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (target.startsWith("/") ? target : join(PROTO_DIR, target));
  root.loadSync(files, { keepCase: true });
  root.resolveAll();
  return root;
}

function lookupType(root: protobuf.Root, name: string): protobuf.Type | null {
  try {
    return root.lookupType(name);
  } catch {
    return null;
  }
}

// The trace id of a W3C traceparent: version-traceid-spanid-flags.
function traceId(traceparent: string | undefined): string {
  if (!traceparent) return "-";
  const parts = traceparent.trim().split("-");
  return parts.length >= 4 ? parts[1] : `invalid(${traceparent})`;
}

interface MoneyObject {
  currency_code?: string;
  units?: string;
  nanos?: number;
}

function moneyText(money: MoneyObject): string {
  // units and nanos share their sign (google.type.Money), and -0.50 has
  // units 0: the sign is taken from either.
  const units = money.units ?? "0";
  const negative = units.startsWith("-") || (money.nanos ?? 0) < 0;
  const nanos = String(Math.abs(money.nanos ?? 0)).padStart(9, "0");
  const digits = `${units.replace(/^-/, "")}.${nanos}`.replace(/0+$/, "").replace(/\.$/, "");
  return `${negative ? "-" : ""}${digits}${money.currency_code ?? ""}`;
}

// A short summary of an event: the ids, status, amount, reason and version
// of the resource (Order or Payment) it carries.
function summary(type: protobuf.Type, event: Record<string, unknown>): string {
  const parts: string[] = [];
  for (const field of type.fieldsArray) {
    const value = event[field.name];
    if (value === undefined || value === null) continue;
    const nested = field.resolvedType;
    if (!(nested instanceof protobuf.Type) || field.repeated) {
      parts.push(`${field.name}=${String(value)}`);
      continue;
    }
    const resource = value as Record<string, unknown>;
    for (const name of ["order_id", "payment_id", "customer_id", "status"]) {
      if (resource[name]) parts.push(`${name}=${String(resource[name])}`);
    }
    for (const name of ["total", "amount"]) {
      if (resource[name]) parts.push(`${name}=${moneyText(resource[name] as MoneyObject)}`);
    }
    for (const name of ["failure_reason", "decline_reason"]) {
      if (resource[name]) parts.push(`${name}=${JSON.stringify(resource[name])}`);
    }
    if (resource.version !== undefined) parts.push(`version=${String(resource.version)}`);
  }
  return parts.join(" ");
}

function describe(stream: string, msg: JsMsg, root: protobuf.Root): string {
  const ceType = msg.headers?.get("ce-type", Match.IgnoreCase) || "";
  const trace = traceId(msg.headers?.get("traceparent", Match.IgnoreCase));
  const prefix = `${stream} ${msg.subject} ${ceType || "-"} trace=${trace}`;
  const type = ceType ? lookupType(root, ceType) : null;
  if (!type) return `${prefix} unknown event type, ${msg.data.length} bytes`;
  let event: Record<string, unknown>;
  try {
    event = type.toObject(type.decode(msg.data), { longs: String, enums: String });
  } catch (error) {
    return `${prefix} undecodable ${ceType}: ${error instanceof Error ? error.message : String(error)}`;
  }
  return `${prefix} ${summary(type, event)}`;
}

interface Options {
  url: string;
  limit: number;
  timeoutMs: number;
  connect: NodeConnectionOptions;
}

function readSecret(path: string, what: string): string {
  let value: string;
  try {
    value = readFileSync(path, "utf8").replace(/[\r\n]+$/, "");
  } catch (error) {
    throw new ConfigError(`${what}: cannot read ${path}: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (!value) throw new ConfigError(`${what}: ${path} is empty`);
  return value;
}

function readFile(path: string, what: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new ConfigError(`${what}: cannot read ${path}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function options(): Options {
  // Every --nats-* flag defaults to the variable of the same name in capitals.
  // A yes/no variable is read as the services read it; anything else stops
  // the reader rather than silently meaning "no" (and plaintext).
  const envBool = (name: string): boolean => {
    const value = (process.env[name] ?? "false").trim().toLowerCase();
    if (["true", "1", "yes"].includes(value)) return true;
    if (["false", "0", "no", ""].includes(value)) return false;
    console.error(`error: ${name}=${JSON.stringify(value)}: expected true or false (also 1/0, yes/no)`);
    process.exit(2);
  };
  const env = process.env;
  const { values: args } = parseArgs({
    options: {
      "nats-url": { type: "string", default: env.NATS_URL ?? "nats://127.0.0.1:4222" },
      "nats-user": { type: "string", default: env.NATS_USER },
      "nats-password": { type: "string", default: env.NATS_PASSWORD },
      "nats-password-file": { type: "string", default: env.NATS_PASSWORD_FILE },
      "nats-token": { type: "string", default: env.NATS_TOKEN },
      "nats-token-file": { type: "string", default: env.NATS_TOKEN_FILE },
      "nats-nkey-seed-file": { type: "string", default: env.NATS_NKEY_SEED_FILE },
      "nats-creds-file": { type: "string", default: env.NATS_CREDS_FILE },
      "nats-tls-required": { type: "boolean", default: envBool("NATS_TLS_REQUIRED") },
      "nats-tls-ca-file": { type: "string", default: env.NATS_TLS_CA_FILE },
      "nats-tls-cert-file": { type: "string", default: env.NATS_TLS_CERT_FILE },
      "nats-tls-key-file": { type: "string", default: env.NATS_TLS_KEY_FILE },
      "nats-inbox-prefix": { type: "string", default: env.NATS_INBOX_PREFIX },
      limit: { type: "string", default: "0" },
      timeout: { type: "string", default: "10" },
    },
  });
  const limit = Number(args.limit);
  const timeout = Number(args.timeout);
  if (!Number.isInteger(limit) || limit < 0) throw new ConfigError(`--limit: ${args.limit} is not a count`);
  if (!(timeout > 0)) throw new ConfigError(`--timeout: ${args.timeout} is not a positive number of seconds`);

  const url = args["nats-url"];
  const servers = url.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  const user = args["nats-user"];
  const timeoutMs = timeout * 1000;
  const connectOptions: NodeConnectionOptions = {
    servers,
    name: "orderflow-events-ts",
    timeout: Math.min(timeoutMs, 5000),
    reconnect: false,
    inboxPrefix: args["nats-inbox-prefix"] || (user ? `_INBOX.${user}` : "_INBOX"),
  };

  const methods: string[] = [];
  if (args["nats-password"] && args["nats-password-file"]) {
    throw new ConfigError("NATS_PASSWORD and NATS_PASSWORD_FILE: give only one");
  }
  if (args["nats-token"] && args["nats-token-file"]) {
    throw new ConfigError("NATS_TOKEN and NATS_TOKEN_FILE: give only one");
  }
  const password =
    args["nats-password"] ||
    (args["nats-password-file"] ? readSecret(args["nats-password-file"], "NATS_PASSWORD_FILE") : undefined);
  if (user || password) {
    if (!user || !password) {
      throw new ConfigError("NATS_USER needs NATS_PASSWORD or NATS_PASSWORD_FILE, and a password needs NATS_USER");
    }
    connectOptions.user = user;
    connectOptions.pass = password;
    methods.push("NATS_USER");
  }
  const token =
    args["nats-token"] || (args["nats-token-file"] ? readSecret(args["nats-token-file"], "NATS_TOKEN_FILE") : undefined);
  if (token) {
    connectOptions.token = token;
    methods.push("NATS_TOKEN");
  }
  if (args["nats-nkey-seed-file"]) {
    const seed = readSecret(args["nats-nkey-seed-file"], "NATS_NKEY_SEED_FILE");
    connectOptions.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
    methods.push("NATS_NKEY_SEED_FILE");
  }
  if (args["nats-creds-file"]) {
    connectOptions.authenticator = credsAuthenticator(readFile(args["nats-creds-file"], "NATS_CREDS_FILE"));
    methods.push("NATS_CREDS_FILE");
  }
  if (methods.length > 1) throw new ConfigError(`${methods.join(" and ")}: give one way to log in`);

  const cert = args["nats-tls-cert-file"];
  const key = args["nats-tls-key-file"];
  const ca = args["nats-tls-ca-file"];
  if (Boolean(cert) !== Boolean(key)) throw new ConfigError("NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE go together");
  // An object (even an empty one) makes the client refuse a server without
  // TLS, before it sends any credential; without one it still upgrades when
  // the server requires TLS.
  if (args["nats-tls-required"] || ca || cert || servers.some((s) => s.startsWith("tls://"))) {
    connectOptions.tls = {
      ...(ca ? { ca: new TextDecoder().decode(readFile(ca, "NATS_TLS_CA_FILE")) } : {}),
      ...(cert && key
        ? {
            cert: new TextDecoder().decode(readFile(cert, "NATS_TLS_CERT_FILE")),
            key: new TextDecoder().decode(readFile(key, "NATS_TLS_KEY_FILE")),
          }
        : {}),
    };
  }
  return { url, limit, timeoutMs, connect: connectOptions };
}

// Prints the stream's events from the first one to the last one present now;
// returns how many, or -1 when the stream does not exist.
async function readStream(
  nc: NatsConnection,
  stream: string,
  root: protobuf.Root,
  limit: number,
  deadline: number,
): Promise<number> {
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  let lastSeq: number;
  try {
    const info = await jsm.streams.info(stream);
    if (info.state.messages === 0) return 0;
    lastSeq = info.state.last_seq;
  } catch (error) {
    if (error instanceof Error && /stream not found/i.test(error.message)) {
      console.error(`error: stream ${stream} does not exist; has orderflow started on this NATS server?`);
      return -1;
    }
    throw error;
  }
  const consumer = await jetstream(nc).consumers.get(stream, {
    name_prefix: `events-ts-${stream.toLowerCase()}`,
    deliver_policy: DeliverPolicy.All,
  });
  let printed = 0;
  const messages = await consumer.consume({ max_messages: limit > 0 ? Math.min(256, limit) : 256 });
  const timer = setTimeout(() => {
    console.error(`warning: --timeout reached before the end of ${stream}`);
    void messages.close();
  }, Math.max(0, deadline - Date.now()));
  try {
    for await (const msg of messages) {
      console.log(describe(stream, msg, root));
      printed += 1;
      if (msg.seq >= lastSeq || (limit > 0 && printed >= limit)) break;
    }
  } finally {
    clearTimeout(timer);
    await messages.close();
    // The server removes it after its inactivity threshold anyway.
    await consumer.delete().catch(() => false);
  }
  return printed;
}

async function main(): Promise<number> {
  let opts: Options;
  let root: protobuf.Root;
  try {
    opts = options();
    root = loadTypes();
  } catch (error) {
    console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  }
  let nc: NatsConnection;
  try {
    nc = await connect(opts.connect);
  } catch (error) {
    console.error(
      `error: cannot connect to NATS at ${opts.url}: ${error instanceof Error ? error.message : String(error)}; ` +
        "is nats-server running, --nats-url right, and the credentials those of a user of the server?",
    );
    return 1;
  }
  // A refused subject is worth saying: the user lacks a permission.
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === "error") console.error(`error: NATS: ${status.error.message}`);
    }
  })();
  let code = 0;
  try {
    const deadline = Date.now() + opts.timeoutMs;
    for (const stream of STREAMS) {
      if ((await readStream(nc, stream, root, opts.limit, deadline)) < 0) code = 1;
    }
  } finally {
    await nc.close();
  }
  return code;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
