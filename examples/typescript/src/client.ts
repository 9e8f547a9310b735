// Places one order with orderflow's OrderService, then watches it until the
// payment settles it. Usage:
//   node dist/client.js [--order-addr localhost:50051] [--customer c-1]
//                       [--request-id r-1] [--units 12]
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

// The messages this client uses, as proto-loader decodes them (keepCase,
// int64 as string, enums as their names).
interface Money {
  currency_code: string;
  units: string;
  nanos: number;
}
interface OrderItem {
  sku: string;
  quantity: number;
  unit_price: Money;
}
interface Order {
  order_id: string;
  customer_id: string;
  items: OrderItem[];
  total: Money | null;
  status: string;
  payment_id: string;
  failure_reason: string;
}
interface CreateOrderRequest {
  customer_id: string;
  items: OrderItem[];
  request_id: string;
}
interface OrderResponse {
  order: Order | null;
}
interface WatchOrderRequest {
  order_id: string;
}

interface OrderServiceClient extends grpc.Client {
  CreateOrder(
    request: CreateOrderRequest,
    options: grpc.CallOptions,
    callback: grpc.requestCallback<OrderResponse>,
  ): grpc.ClientUnaryCall;
  WatchOrder(
    request: WatchOrderRequest,
    options: grpc.CallOptions,
  ): grpc.ClientReadableStream<OrderResponse>;
}

const SETTLED = new Set([
  "ORDER_STATUS_CONFIRMED",
  "ORDER_STATUS_PAYMENT_FAILED",
  "ORDER_STATUS_CANCELLED",
  "ORDER_STATUS_REFUNDED",
]);

const deadline = (seconds: number): Date => new Date(Date.now() + seconds * 1000);

function loadOrderService(address: string): OrderServiceClient {
  // proto/ at the repository root; this file runs from examples/typescript/dist.
  const protoDir = fileURLToPath(new URL("../../../proto", import.meta.url));
  const definition = protoLoader.loadSync("orderflow/order/v1/order_service.proto", {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [protoDir],
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    orderflow: { order: { v1: { OrderService: grpc.ServiceClientConstructor } } };
  };
  const { OrderService } = loaded.orderflow.order.v1;
  return new OrderService(address, grpc.credentials.createInsecure()) as unknown as OrderServiceClient;
}

function createOrder(client: OrderServiceClient, request: CreateOrderRequest): Promise<Order> {
  return new Promise((resolve, reject) => {
    client.CreateOrder(request, { deadline: deadline(10) }, (error, response) => {
      if (error) reject(error);
      else if (!response?.order) reject(new Error("CreateOrder answered without an order"));
      else resolve(response.order);
    });
  });
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      "order-addr": { type: "string", default: "localhost:50051" },
      customer: { type: "string", default: "c-1" },
      "request-id": { type: "string", default: `ts-${randomUUID()}` },
      units: { type: "string", default: "12" },
    },
  });
  const client = loadOrderService(args["order-addr"]);
  try {
    const created = await createOrder(client, {
      customer_id: args.customer,
      items: [
        { sku: "SKU-1", quantity: 1, unit_price: { currency_code: "EUR", units: args.units, nanos: 0 } },
      ],
      request_id: args["request-id"],
    });
    console.log(`created: ${created.order_id} ${created.status}`);

    // The stream sends the current state, then every change, and ends once
    // the order is settled.
    let last = created;
    const stream = client.WatchOrder({ order_id: created.order_id }, { deadline: deadline(60) });
    for await (const { order } of stream as AsyncIterable<OrderResponse>) {
      if (!order) continue;
      console.log(`status: ${order.status}${order.failure_reason ? ` (${order.failure_reason})` : ""}`);
      last = order;
    }
    if (!SETTLED.has(last.status)) {
      throw new Error(`WatchOrder ended before order ${last.order_id} settled (${last.status})`);
    }
    console.log(`final: ${last.order_id} ${last.status}`);
  } finally {
    client.close();
  }
}

function isServiceError(error: unknown): error is grpc.ServiceError {
  return error instanceof Error && "code" in error && "details" in error;
}

main().catch((error: unknown) => {
  if (isServiceError(error)) {
    console.error(`gRPC error: ${grpc.status[error.code]} (${error.code}): ${error.details}`);
  } else {
    console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
  }
  process.exit(1);
});
