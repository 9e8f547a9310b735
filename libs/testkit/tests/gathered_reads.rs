//! Gathered single-subject reads (`orderflow_eventbus::gather`) against a
//! real nats-server: each ask gets its own subject's last message, and asks
//! made together share batched requests.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use async_nats::jetstream::stream::Config;
use futures_util::StreamExt;
use orderflow_eventbus::gather::GatheredReads;
use orderflow_testkit::{NatsServer, streams::jetstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_made_together_get_their_own_answers_from_few_requests() {
    let nats = NatsServer::start();
    let js = jetstream(&nats.url()).await;
    // Unique, in case the server is shared (ORDERFLOW_TEST_NATS_URL).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    let stream = format!("GATHER_{nanos}");
    js.create_stream(Config {
        name: stream.clone(),
        subjects: vec![format!("{stream}.>")],
        allow_direct: true,
        ..Config::default()
    })
    .await
    .expect("create the scratch stream");
    // Every even subject has two messages (the last one is the answer),
    // every odd one none.
    const ASKS: usize = 120;
    for i in (0..ASKS).step_by(2) {
        for version in ["first", "last"] {
            js.publish(format!("{stream}.s{i}"), format!("{i} {version}").into())
                .await
                .expect("publish")
                .await
                .expect("publish ack");
        }
    }
    // A plain subscriber sees every direct get request the reader sends.
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let mut requests = client
        .subscribe(format!("$JS.API.DIRECT.GET.{stream}"))
        .await
        .expect("subscribe to the requests");
    client.flush().await.expect("flush the subscription");

    let reads = GatheredReads::new(js.clone(), stream.clone());
    let answers = futures_util::future::join_all((0..ASKS).map(|i| {
        let reads = reads.clone();
        let subject = format!("{stream}.s{i}");
        async move { (i, reads.last(&subject).await) }
    }))
    .await;
    for (i, answer) in answers {
        let answer = answer.unwrap_or_else(|e| panic!("ask {i} failed: {e}"));
        if i % 2 == 0 {
            let event = answer.unwrap_or_else(|| panic!("subject s{i} has messages"));
            assert_eq!(event.subject, format!("{stream}.s{i}"));
            assert_eq!(event.payload, format!("{i} last").into_bytes());
        } else {
            assert!(answer.is_none(), "subject s{i} has no message: {answer:?}");
        }
    }

    // The asks went out in few requests: count them until none arrives for
    // a moment after the last answer (they all were sent before it).
    let mut sent = 0;
    while let Ok(Some(_)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), requests.next()).await
    {
        sent += 1;
    }
    assert!(
        (1..=ASKS / 4).contains(&sent),
        "{ASKS} asks made together took {sent} requests"
    );

    // Asking twice for one subject in one batch answers both.
    let subject = format!("{stream}.s0");
    let (a, b) = tokio::join!(reads.last(&subject), reads.last(&subject));
    assert_eq!(a.unwrap().unwrap().sequence, b.unwrap().unwrap().sequence);

    // A wildcard is refused with the reason, not sent.
    let refused = reads.last(&format!("{stream}.*")).await;
    let error = refused.expect_err("a wildcard is refused").to_string();
    assert!(error.contains("literal subject"), "{error}");
}
