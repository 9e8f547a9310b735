#!/usr/bin/env python3
"""Places an order with orderflow's OrderService and watches it until it settles.

    python client.py --customer c-1 --request-id r-1 --units 12

CreateOrder creates the order (status ORDER_STATUS_PENDING_PAYMENT); the payment
happens asynchronously, so the client then calls the server-streaming WatchOrder,
which sends the order's current state and then every change, and ends once the
order is settled (CONFIRMED, PAYMENT_FAILED, CANCELLED or REFUNDED).

Every call carries a W3C `traceparent` in its gRPC metadata, so the order's
events in JetStream (see events.py) carry the trace id printed as `trace:`.

Run generate.sh first: the classes are imported from gen/.
"""

import argparse
import os
import secrets
import sys
import uuid
from typing import NoReturn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

try:
    import grpc

    from orderflow.money.v1 import money_pb2
    from orderflow.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
except ImportError as error:  # pragma: no cover - set-up problem
    sys.exit(
        f"error: {error}. Install the requirements (pip install -r requirements.txt) "
        "and run ./generate.sh first."
    )

SETTLED = {
    order_pb2.ORDER_STATUS_CONFIRMED,
    order_pb2.ORDER_STATUS_PAYMENT_FAILED,
    order_pb2.ORDER_STATUS_CANCELLED,
    order_pb2.ORDER_STATUS_REFUNDED,
}


def status_name(status: int) -> str:
    return order_pb2.OrderStatus.Name(status)


def money_text(money: money_pb2.Money) -> str:
    # units and nanos share their sign (google.type.Money), and -0.50 has
    # units 0: the sign is taken from either.
    sign = "-" if money.units < 0 or money.nanos < 0 else ""
    amount = f"{abs(money.units)}.{abs(money.nanos):09d}".rstrip("0").rstrip(".")
    return f"{sign}{amount}{money.currency_code}"


def rpc_error(call: str, error: grpc.RpcError) -> NoReturn:
    code = error.code()
    name = code.name if code is not None else "UNKNOWN"
    hint = ""
    if code == grpc.StatusCode.UNAVAILABLE:
        hint = " (is order-service running and --order-addr right?)"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        hint = " (raise --timeout, or check that the services and nats-server are up)"
    sys.exit(f"error: {call} failed: {name}: {error.details()}{hint}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Create an orderflow order and watch it settle.")
    parser.add_argument("--order-addr", default="localhost:50051", help="host:port of order-service (default: %(default)s)")
    parser.add_argument("--customer", default="c-1", help="customer id (default: %(default)s)")
    parser.add_argument(
        "--request-id",
        default=None,
        help="idempotency key; repeating it returns the same order (default: a new UUID)",
    )
    parser.add_argument("--units", type=int, default=12, help="unit price in whole currency units (default: %(default)s)")
    parser.add_argument("--nanos", type=int, default=0, help="unit price's nano units (default: %(default)s)")
    parser.add_argument("--currency", default="EUR", help="ISO 4217 currency code (default: %(default)s)")
    parser.add_argument("--sku", default="SKU-1", help="item SKU (default: %(default)s)")
    parser.add_argument("--quantity", type=int, default=1, help="item quantity (default: %(default)s)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="deadline in seconds for CreateOrder and for the whole WatchOrder stream (default: %(default)s)",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    request_id = args.request_id or str(uuid.uuid4())

    # One W3C trace context for the whole interaction: the services keep the
    # caller's trace id on every event they publish for this order.
    trace_id = secrets.token_hex(16)
    metadata = (("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),)

    with grpc.insecure_channel(args.order_addr) as channel:
        orders = order_service_pb2_grpc.OrderServiceStub(channel)

        request = order_service_pb2.CreateOrderRequest(
            customer_id=args.customer,
            request_id=request_id,
            items=[
                order_pb2.OrderItem(
                    sku=args.sku,
                    quantity=args.quantity,
                    unit_price=money_pb2.Money(currency_code=args.currency, units=args.units, nanos=args.nanos),
                )
            ],
        )
        try:
            created = orders.CreateOrder(request, timeout=args.timeout, metadata=metadata).order
        except grpc.RpcError as error:
            rpc_error("CreateOrder", error)
        print(f"trace: {trace_id}")
        print(f"created: {created.order_id} {status_name(created.status)} total={money_text(created.total)}")

        # Watch until the order settles. A server shutting down ends the stream
        # with UNAVAILABLE; the contract says to watch again, so retry a few times.
        last = created
        attempts = 0
        while True:
            try:
                for update in orders.WatchOrder(
                    order_service_pb2.WatchOrderRequest(order_id=created.order_id),
                    timeout=args.timeout,
                    metadata=metadata,
                ):
                    last = update.order
                    detail = f" reason={last.failure_reason!r}" if last.failure_reason else ""
                    payment = f" payment={last.payment_id}" if last.payment_id else ""
                    print(f"status: {status_name(last.status)} version={last.version}{payment}{detail}")
                break
            except grpc.RpcError as error:
                attempts += 1
                if error.code() == grpc.StatusCode.UNAVAILABLE and attempts < 3:
                    print(f"watch interrupted ({error.details()}); watching again", file=sys.stderr)
                    continue
                rpc_error("WatchOrder", error)

    print(f"final: {last.order_id} {status_name(last.status)}")
    if last.status not in SETTLED:
        print("error: WatchOrder ended before the order settled", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
