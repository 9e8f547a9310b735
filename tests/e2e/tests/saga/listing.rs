//! ListOrders: pages and filters in creation order, and a customer with
//! more orders than one index read allows.

use super::*;

/// Every page of ListOrders for `request`'s filters, followed token by
/// token to the end.
async fn list_all_pages(
    client: &orderflow_proto::order::v1::order_service_client::OrderServiceClient<
        tonic::transport::Channel,
    >,
    request: ListOrdersRequest,
) -> Vec<orderflow_proto::order::v1::Order> {
    let mut client = client.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_orders(ListOrdersRequest {
                page_token: token.clone(),
                ..request.clone()
            })
            .await
            .expect("ListOrders answers")
            .into_inner();
        assert!(
            page.orders.len() <= usize::try_from(request.page_size).unwrap_or(0).max(1),
            "a page holds at most page_size orders"
        );
        seen.extend(page.orders);
        if page.next_page_token.is_empty() {
            return seen;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_orders_pages_and_filters_in_creation_order() {
    // A server of its own: the test reads whole streams or counts every order.
    let nats = NatsServer::start_own();
    let orders = spawn_order_service(&nats.url()).await;
    let mut client = order_client(&orders).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let order = client
            .create_order(order_request("pager.one", 1, 1, &format!("r-page-{i}")))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        created.push(order.order_id);
        // Another customer's order between each of them: a customer filter
        // must skip it, not stop at it.
        client
            .create_order(order_request("someone-else", 1, 1, &format!("r-page-x{i}")))
            .await
            .unwrap();
    }
    // One of the customer's orders leaves PENDING_PAYMENT: the status filter
    // must leave it out, and every other filter must show its new state.
    let cancelled = client
        .cancel_order(CancelOrderRequest {
            order_id: created[1].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled as i32);

    let all = list_all_pages(
        &client,
        ListOrdersRequest {
            page_size: 3,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(all.len(), 10, "every order of every customer, once");

    let mine = list_all_pages(
        &client,
        ListOrdersRequest {
            page_size: 2,
            customer_id: String::from("pager.one"),
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<_> = mine.iter().map(|o| o.order_id.clone()).collect();
    assert_eq!(
        ids, created,
        "the customer's orders, oldest first, each once"
    );
    assert_eq!(
        mine[1].status,
        OrderStatus::Cancelled as i32,
        "a listed order is in its current state: {:?}",
        mine[1]
    );
    assert_eq!(mine[1].version, 2);

    let pending = list_all_pages(
        &client,
        ListOrdersRequest {
            page_size: 2,
            customer_id: String::from("pager.one"),
            status: OrderStatus::PendingPayment as i32,
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<_> = pending.iter().map(|o| o.order_id.clone()).collect();
    let expected: Vec<_> = created
        .iter()
        .filter(|id| **id != created[1])
        .cloned()
        .collect();
    assert_eq!(ids, expected, "the status filter drops the cancelled order");

    let none = client
        .list_orders(ListOrdersRequest {
            customer_id: String::from("pager.one"),
            status: OrderStatus::Confirmed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.orders.is_empty());
    assert!(none.next_page_token.is_empty());

    // A token is bound to its filters.
    let first = client
        .list_orders(ListOrdersRequest {
            page_size: 1,
            customer_id: String::from("pager.one"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let refused = client
        .list_orders(ListOrdersRequest {
            page_size: 1,
            page_token: first.next_page_token,
            customer_id: String::from("someone-else"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    orders.stop().await.unwrap();
}

/// More orders than one multi-last direct get may match (1,024 subjects):
/// lists page through the creation events, so a big customer is listed
/// whole, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_with_more_orders_than_one_index_read_allows_is_listed_whole() {
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let client = order_client(&orders).await;
    let count = 1_100;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..count {
        let mut client = client.clone();
        calls.spawn(async move {
            client
                .create_order(order_request("big", 1, 1, &format!("r-big-{i}")))
                .await
                .expect("CreateOrder answers")
                .into_inner()
                .order
                .expect("an order")
                .order_id
        });
        // At most 32 calls in flight.
        while calls.len() >= 32 {
            calls.join_next().await;
        }
    }
    while calls.join_next().await.is_some() {}

    let listed = list_all_pages(
        &client,
        ListOrdersRequest {
            page_size: 1000,
            customer_id: String::from("big"),
            ..Default::default()
        },
    )
    .await;
    let mut ids: Vec<_> = listed.iter().map(|o| o.order_id.clone()).collect();
    assert_eq!(ids.len(), count, "every order of the customer");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "and each once");

    orders.stop().await.unwrap();
}
