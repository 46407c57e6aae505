//! Work queues, acks and dead letters, de-duplication, request-reply and presence
//! (PROTOCOL.md §4–5), driven over real sockets.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Raw, TestServer, config, http, post_json};
use herald::config::TopicConfig;
use serde_json::{Value, json};

fn with_topic(t: TopicConfig) -> herald::Config {
    let mut c = config();
    c.topics.push(t);
    c
}

async fn sub_group(c: &mut Raw, pattern: &str, group: &str, manual: bool) {
    let mut f = json!({"op": "sub", "pattern": pattern, "group": group});
    if manual {
        f["ack"] = json!("manual");
    }
    let ok = c.request(f).await;
    assert_eq!(ok["op"], "ok", "{ok}");
}

#[tokio::test]
async fn group_members_share_work_and_plain_subscribers_get_everything() {
    let server = TestServer::start().await;
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut m = server.client().await;
        sub_group(&mut m, "jobs/*", "workers", false).await;
        members.push(m);
    }
    let mut watcher = server.client().await;
    watcher.sub("jobs/**").await;
    let mut p = server.client().await;
    for i in 0..30 {
        p.publish("jobs/resize", json!(i)).await;
    }
    let mut all = Vec::new();
    for m in &mut members {
        let mut got = Vec::new();
        while let Some(v) = m.recv_within(Duration::from_millis(300)).await {
            if v["op"] == "msg" {
                got.push(v["data"].as_u64().unwrap());
            }
        }
        assert_eq!(got.len(), 10, "round-robin over connected members: {got:?}");
        all.extend(got);
    }
    all.sort();
    assert_eq!(
        all,
        (0..30).collect::<Vec<u64>>(),
        "each job to exactly one member"
    );
    for i in 0..30 {
        assert_eq!(watcher.recv_op("msg").await["data"], i);
    }

    // A disconnected member is skipped while connected ones exist.
    drop(members.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..10 {
        p.publish("jobs/resize", json!(100 + i)).await;
    }
    let mut n = 0;
    for m in &mut members {
        while let Some(v) = m.recv_within(Duration::from_millis(300)).await {
            n += usize::from(v["op"] == "msg");
        }
    }
    assert_eq!(n, 10);

    // Bad group options.
    let e = p
        .request(json!({"op": "sub", "pattern": "jobs/*", "ack": "manual"}))
        .await;
    assert_eq!(e["code"], "bad_request", "{e}");
    let e = p
        .request(json!({"op": "sub", "pattern": "jobs/*", "group": "", "ack": "manual"}))
        .await;
    assert_eq!(e["code"], "bad_request", "{e}");
    server.stop().await;
}

/// A worker: acks each job after recording it, until `stop_after` jobs (then its socket is
/// dropped without a word, with whatever it had unacked).
async fn worker(
    mut c: Raw,
    done: Arc<Mutex<HashMap<u64, u32>>>,
    stop_after: Option<usize>,
    total: u64,
) {
    let mut handled = 0;
    loop {
        if done.lock().unwrap().len() as u64 >= total {
            return;
        }
        let Some(v) = c.recv_within(Duration::from_millis(200)).await else {
            continue;
        };
        if v["op"] != "msg" {
            continue;
        }
        if stop_after.is_some_and(|n| handled >= n) {
            return; // killed: this job and the rest of its buffer are never acked
        }
        let job = v["data"]["job"].as_u64().unwrap();
        *done.lock().unwrap().entry(job).or_default() += 1;
        c.send(json!({"op": "ack", "seq": v["seq"]})).await;
        handled += 1;
    }
}

#[tokio::test]
async fn work_queue_loses_nothing_and_repeats_nothing_when_a_worker_dies() {
    const JOBS: u64 = 10_000;
    let server = TestServer::with_config(with_topic(TopicConfig {
        pattern: "work/**".into(),
        ack_wait: Duration::from_secs(2),
        ..TopicConfig::default()
    }))
    .await;
    let done = Arc::new(Mutex::new(HashMap::new()));
    let mut tasks = Vec::new();
    for w in 0..3 {
        let mut c = server.client().await;
        sub_group(&mut c, "work/thumbnails", "thumbs", true).await;
        let stop = (w == 2).then_some(1_000);
        tasks.push(tokio::spawn(worker(c, done.clone(), stop, JOBS)));
    }
    for chunk in 0..JOBS / 500 {
        let batch: Vec<Value> = (chunk * 500..(chunk + 1) * 500)
            .map(|j| json!({"topic": "work/thumbnails", "data": {"job": j}}))
            .collect();
        let r = http()
            .post(server.http("/v1/publish/batch"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (done.lock().unwrap().len() as u64) < JOBS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {JOBS} jobs done",
            done.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let done = done.lock().unwrap().clone();
    assert_eq!(done.len() as u64, JOBS, "every job processed");
    let twice: Vec<_> = done.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs processed twice: {twice:?}");
    assert!(
        server
            .bus
            .stats()
            .redelivered
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    server.stop().await;
}

#[tokio::test]
async fn a_job_that_always_fails_lands_in_the_dead_letter_topic() {
    let server = TestServer::with_config(with_topic(TopicConfig {
        pattern: "flaky/**".into(),
        ack_wait: Duration::from_millis(200),
        max_deliveries: 3,
        ..TopicConfig::default()
    }))
    .await;
    let mut dlq = server.client().await;
    dlq.sub("$dlq/**").await;
    let mut w = server.client().await;
    sub_group(&mut w, "flaky/job", "w", true).await;
    let mut p = server.client().await;
    p.send(
        json!({"op": "pub", "id": "p", "topic": "flaky/job", "data": {"x": 1},
                  "msg_id": "job-1"}),
    )
    .await;
    let deliveries: Vec<(Option<bool>, Option<u64>)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let m = w.recv_op("msg").await; // never acked
            v.push((m["redelivered"].as_bool(), m["deliveries"].as_u64()));
        }
        v
    };
    assert_eq!(
        deliveries,
        [(None, None), (Some(true), Some(2)), (Some(true), Some(3))]
    );
    let dead = dlq.recv_op("msg").await;
    assert_eq!(dead["topic"], "$dlq/flaky/job");
    assert_eq!(
        dead["data"],
        json!({"topic": "flaky/job", "data": {"x": 1}, "deliveries": 3, "msg_id": "job-1"})
    );
    // And it is not delivered again.
    assert!(w.recv_within(Duration::from_millis(600)).await.is_none());

    // An acked job is never redelivered.
    p.publish("flaky/job", json!({"x": 2})).await;
    let m = w.recv_op("msg").await;
    w.send(json!({"op": "ack", "seq": m["seq"]})).await;
    assert!(w.recv_within(Duration::from_millis(600)).await.is_none());
    server.stop().await;
}

#[tokio::test]
async fn duplicate_publishes_are_delivered_once() {
    let server = TestServer::start().await;
    let mut s = server.client().await;
    s.sub("pay/*").await;
    let mut p = server.client().await;
    let first = p
        .request(json!({"op": "pub", "topic": "pay/in", "data": 1, "msg_id": "tx-9"}))
        .await;
    assert_eq!(first["duplicate"], false);
    let again = p
        .request(json!({"op": "pub", "topic": "pay/in", "data": 1, "msg_id": "tx-9"}))
        .await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["offset"], first["offset"]);
    // HTTP publishes share the window.
    let r: Value = post_json(
        server.http("/v1/publish"),
        &json!({"topic": "pay/in", "data": 1, "msg_id": "tx-9"}),
    )
    .await;
    assert_eq!(
        (r["duplicate"].clone(), r["offset"].clone()),
        (json!(true), first["offset"].clone())
    );
    // The same id on another topic is another message.
    let other = p
        .request(json!({"op": "pub", "topic": "pay/out", "data": 2, "msg_id": "tx-9"}))
        .await;
    assert_eq!(other["duplicate"], false);

    let m = s.recv_op("msg").await;
    assert_eq!(
        (m["topic"].as_str(), m["msg_id"].as_str()),
        (Some("pay/in"), Some("tx-9"))
    );
    let m = s.recv_op("msg").await;
    assert_eq!(m["topic"], "pay/out");
    assert!(s.recv_within(Duration::from_millis(300)).await.is_none());
    server.stop().await;
}

#[tokio::test]
async fn dedup_window_expires() {
    let server = TestServer::with_config(with_topic(TopicConfig {
        pattern: "**".into(),
        dedup_window: Duration::from_millis(200),
        ..TopicConfig::default()
    }))
    .await;
    let mut p = server.client().await;
    let f = json!({"op": "pub", "topic": "t", "data": 1, "msg_id": "a"});
    assert_eq!(p.request(f.clone()).await["duplicate"], false);
    assert_eq!(p.request(f.clone()).await["duplicate"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = p.request(f).await;
    assert_eq!(
        (third["duplicate"].as_bool(), third["offset"].as_u64()),
        (Some(false), Some(2))
    );
    server.stop().await;
}

/// A responder that answers every request on `pattern` with `tag`.
async fn responder(mut c: Raw, tag: &'static str, answered: Arc<Mutex<u32>>) {
    while let Some(v) = c.recv_within(Duration::from_secs(5)).await {
        if v["op"] == "msg"
            && let Some(inbox) = v["reply_to"].as_str()
        {
            *answered.lock().unwrap() += 1;
            c.send(json!({"op": "pub", "topic": inbox, "data": {"from": tag, "echo": v["data"]}}))
                .await;
        }
    }
}

#[tokio::test]
async fn request_to_a_group_of_three_is_answered_once() {
    let server = TestServer::start().await;
    let answered = Arc::new(Mutex::new(0));
    for tag in ["a", "b", "c"] {
        let mut c = server.client().await;
        sub_group(&mut c, "svc/echo", "echo", false).await;
        tokio::spawn(responder(c, tag, answered.clone()));
    }
    let mut r = server.client().await;
    for i in 0..6 {
        r.send(json!({"op": "req", "id": i, "topic": "svc/echo", "data": i}))
            .await;
        let reply = r.recv().await;
        assert_eq!(reply["op"], "reply", "{reply}");
        assert_eq!(reply["id"], i);
        assert_eq!(reply["data"]["echo"], i);
    }
    assert!(r.recv_within(Duration::from_millis(300)).await.is_none());
    assert_eq!(*answered.lock().unwrap(), 6, "one member per request");
    server.stop().await;
}

#[tokio::test]
async fn first_reply_wins_no_responders_and_timeouts() {
    let server = TestServer::with_config({
        let mut c = config();
        c.limits.max_pending_requests = 2;
        c
    })
    .await;
    // Three plain responders: all get the request, only the first reply counts.
    let answered = Arc::new(Mutex::new(0));
    for tag in ["a", "b", "c"] {
        let mut c = server.client().await;
        c.sub("svc/all").await;
        tokio::spawn(responder(c, tag, answered.clone()));
    }
    let mut r = server.client().await;
    r.send(json!({"op": "req", "id": 1, "topic": "svc/all", "data": "hi"}))
        .await;
    let reply = r.recv().await;
    assert_eq!(
        (reply["op"].as_str(), reply["id"].as_u64()),
        (Some("reply"), Some(1))
    );
    assert!(
        r.recv_within(Duration::from_millis(300)).await.is_none(),
        "one reply only"
    );
    assert_eq!(*answered.lock().unwrap(), 3);

    let e = r
        .request(json!({"op": "req", "topic": "svc/nobody", "data": 1}))
        .await;
    assert_eq!(e["code"], "no_responders", "{e}");

    // A subscriber that never answers.
    let mut silent = server.client().await;
    silent.sub("svc/silent").await;
    r.send(json!({"op": "req", "id": "t1", "topic": "svc/silent", "data": 1, "timeout_ms": 200}))
        .await;
    r.send(json!({"op": "req", "id": "t2", "topic": "svc/silent", "data": 2, "timeout_ms": 200}))
        .await;
    let e = r
        .request(json!({"op": "req", "topic": "svc/silent", "data": 3}))
        .await;
    assert_eq!(e["code"], "rate_limited", "max_pending_requests: {e}");
    let t1 = r.recv_op_id("t1").await;
    assert_eq!(t1["code"], "timeout", "{t1}");
    let t2 = r.recv_op_id("t2").await;
    assert_eq!(t2["code"], "timeout", "{t2}");
    // A late reply is dropped.
    let m = silent.recv_op("msg").await;
    let inbox = m["reply_to"].as_str().unwrap().to_owned();
    assert!(inbox.starts_with("$inbox/"));
    silent.publish(&inbox, json!("late")).await;
    assert!(r.recv_within(Duration::from_millis(300)).await.is_none());

    // Inbox publishes are never routed, even to a `$inbox/**` subscriber.
    let mut spy = server.client().await;
    spy.sub("$inbox/**").await;
    r.send(json!({"op": "req", "id": 9, "topic": "svc/all", "data": "x"}))
        .await;
    assert_eq!(r.recv().await["op"], "reply");
    assert!(spy.recv_within(Duration::from_millis(300)).await.is_none());

    let e = r
        .request(json!({"op": "req", "topic": "svc/all", "data": 1, "timeout_ms": 600000}))
        .await;
    assert_eq!(e["code"], "bad_request");
    server.stop().await;
}

#[tokio::test]
async fn presence_follows_subscriptions_not_sockets() {
    let server = TestServer::with_config({
        let mut c = config();
        c.session.ttl = Duration::from_millis(400);
        c
    })
    .await;
    let mut watch = server.client().await;
    watch.sub("$presence/chat/lobby").await;

    let mut a = server.connect().await;
    let welcome = a.hello().await;
    let sid = welcome["session"].as_str().unwrap().to_owned();
    a.sub("chat/lobby").await;
    let join = watch.recv_op("msg").await;
    assert_eq!(join["data"]["event"], "join");
    assert_eq!(join["data"]["session"], sid);

    let list = a
        .request(json!({"op": "presence", "topic": "chat/lobby"}))
        .await;
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["clients"][0]["session"], sid);

    // A brief disconnect is not a leave.
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut a = server.connect().await;
    a.send(json!({"op": "hello", "session": sid, "last_seq": 0}))
        .await;
    assert_eq!(a.recv_op("welcome").await["resumed"], true);
    assert!(
        watch
            .recv_within(Duration::from_millis(200))
            .await
            .is_none()
    );
    let v: Value = common::get_json(server.http("/v1/presence?topic=chat/lobby")).await;
    assert_eq!(v["count"], 1, "{v}");

    // Unsubscribing is a leave.
    a.request(json!({"op": "unsub", "pattern": "chat/lobby"}))
        .await;
    let leave = watch.recv_op("msg").await;
    assert_eq!(
        (
            leave["data"]["event"].as_str(),
            leave["data"]["session"].as_str()
        ),
        (Some("leave"), Some(sid.as_str()))
    );

    // So is expiry.
    let mut b = server.connect().await;
    let bid = b.hello().await["session"].as_str().unwrap().to_owned();
    b.sub("chat/lobby").await;
    assert_eq!(watch.recv_op("msg").await["data"]["event"], "join");
    drop(b);
    let leave = watch.recv_op("msg").await;
    assert_eq!(
        (
            leave["data"]["event"].as_str(),
            leave["data"]["session"].as_str()
        ),
        (Some("leave"), Some(bid.as_str()))
    );
    let list = a
        .request(json!({"op": "presence", "topic": "chat/lobby"}))
        .await;
    assert_eq!(list["count"], 0);
    // Wildcards have no members; the topic must be valid.
    let e = a
        .request(json!({"op": "presence", "topic": "chat/*"}))
        .await;
    assert_eq!(e["code"], "bad_topic");
    server.stop().await;
}

#[tokio::test]
async fn a_responder_arriving_after_no_responders_is_found() {
    let server = TestServer::start().await;
    let mut r = server.client().await;
    let e = r
        .request(json!({"op": "req", "topic": "svc/late", "data": 1}))
        .await;
    assert_eq!(e["code"], "no_responders");
    let mut c = server.client().await;
    sub_group(&mut c, "svc/late", "g", false).await;
    tokio::spawn(responder(c, "late", Arc::new(Mutex::new(0))));
    r.send(json!({"op": "req", "id": 2, "topic": "svc/late", "data": 2}))
        .await;
    let reply = r.recv().await;
    assert_eq!(reply["op"], "reply", "{reply}");
    server.stop().await;
}

/// The Rust client's calls for history, presence, `since` and requests.
#[tokio::test]
async fn rust_client_history_presence_since_and_request() {
    use herald_client::{Client, PublishOptions, Since, SubscribeOptions};
    let server = TestServer::with_config({
        let mut c = config();
        c.topics.push(TopicConfig {
            pattern: "room/**".into(),
            history: 10,
            ..TopicConfig::default()
        });
        c
    })
    .await;
    let a = Client::connect(&server.ws_url()).await.unwrap();
    let first = a.publish("room/1", &json!({"t": "one"})).await.unwrap();
    a.publish("room/1", &json!({"t": "two"})).await.unwrap();
    let dup = a
        .publish_with(
            "room/1",
            &json!({"t": "two"}),
            PublishOptions {
                msg_id: Some("m2".into()),
                retain: false,
            },
        )
        .await
        .unwrap();
    assert!(!dup.duplicate);
    let (epoch, msgs) = a.history("room/1", None, None).await.unwrap();
    assert_eq!(epoch, first.epoch);
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0].data, json!({"t": "one"}));

    let b = Client::connect(&server.ws_url()).await.unwrap();
    let mut sub = b
        .subscribe_with(
            "room/1",
            SubscribeOptions {
                since: Some(Since::at(first.epoch.clone(), 1)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(sub.recovered(), Some(true));
    let m = sub.next_msg().await.unwrap();
    assert_eq!((m.offset, m.replay), (2, true));
    let who = a.presence("room/1").await.unwrap();
    assert_eq!(who.len(), 1);
    assert_eq!(Some(who[0].session.clone()), b.session());

    let err = a
        .request("room/nobody", &json!(1), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("no_responders"), "{err}");
    server.stop().await;
}

/// Redelivery prefers another member (PROTOCOL.md §5): of two connected manual-ack members,
/// the one that ignores its job does not get it back; the other does, marked as redelivered.
/// Each member gets one job first (round robin), so plain round robin would hand the
/// redelivery back to the member that ignored it.
#[tokio::test]
async fn redelivery_goes_to_another_connected_member() {
    let server = TestServer::with_config(with_topic(TopicConfig {
        pattern: "jobs/**".into(),
        ack_wait: Duration::from_millis(200),
        ..TopicConfig::default()
    }))
    .await;
    let mut members = Vec::new();
    for _ in 0..2 {
        let mut m = server.client().await;
        sub_group(&mut m, "jobs/render", "render", true).await;
        members.push(m);
    }
    let mut p = server.client().await;
    p.publish("jobs/render", json!("ignored")).await;
    p.publish("jobs/render", json!("done")).await;
    let mut jobs = Vec::new();
    for m in &mut members {
        jobs.push(m.recv_op("msg").await);
    }
    let busy_at = jobs.iter().position(|j| j["data"] == "done").unwrap();
    assert_eq!(
        jobs[1 - busy_at]["data"],
        "ignored",
        "one job each: {jobs:?}"
    );
    let mut lazy = members.remove(1 - busy_at);
    let mut busy = members.pop().unwrap();
    busy.send(json!({"op": "ack", "seq": jobs[busy_at]["seq"]}))
        .await;
    let again = busy.recv_op("msg").await;
    assert_eq!(
        (
            again["data"].clone(),
            again["redelivered"].clone(),
            again["deliveries"].clone()
        ),
        (json!("ignored"), json!(true), json!(2)),
        "{again}"
    );
    busy.send(json!({"op": "ack", "seq": again["seq"]})).await;
    assert!(
        lazy.recv_within(Duration::from_millis(500)).await.is_none(),
        "the member that ignored the job got it back"
    );
    server.stop().await;
}

/// A member that disconnects holds its unacked job only until redelivery (PROTOCOL.md §5):
/// once the job went to another member, resuming the first member's session does not replay
/// it (its seq is covered by a gap instead), so the job is not processed twice.
#[tokio::test]
async fn a_resumed_member_does_not_get_back_a_job_redelivered_elsewhere() {
    let server = TestServer::with_config(with_topic(TopicConfig {
        pattern: "jobs/**".into(),
        ack_wait: Duration::from_millis(200),
        ..TopicConfig::default()
    }))
    .await;
    let mut a = server.connect().await;
    let session = a.hello().await["session"].as_str().unwrap().to_owned();
    sub_group(&mut a, "jobs/mail", "mail", true).await;
    let mut p = server.client().await;
    p.publish("jobs/mail", json!("job-1")).await;
    // `a` is the only member: the job is its own.
    let job = a.recv_op("msg").await;
    assert_eq!(
        (job["seq"].as_u64(), job["data"].as_str()),
        (Some(1), Some("job-1"))
    );
    let mut b = server.client().await;
    sub_group(&mut b, "jobs/mail", "mail", true).await;
    // `a` crashes before processing it; after `ack_wait` the job goes to `b`.
    drop(a);
    let again = b.recv_op("msg").await;
    assert_eq!(
        (again["data"].as_str(), again["deliveries"].as_u64()),
        (Some("job-1"), Some(2))
    );
    b.send(json!({"op": "ack", "seq": again["seq"]})).await;
    // `a` comes back, claiming it saw nothing.
    let mut a = server.connect().await;
    a.send(json!({"op": "hello", "session": session, "last_seq": 0}))
        .await;
    assert_eq!(a.recv().await["resumed"], true);
    let mut frames = Vec::new();
    while let Some(f) = a.recv_within(Duration::from_millis(500)).await {
        frames.push(f);
    }
    assert_eq!(
        frames,
        [json!({"op": "gap", "from_seq": 1, "to_seq": 1, "reason": "overflow"})],
        "the job came back to the member that lost it"
    );
    // The session is still a member: the next job can reach it.
    p.publish("jobs/mail", json!("job-2")).await;
    p.publish("jobs/mail", json!("job-3")).await;
    let mut got = vec![
        a.recv_op("msg").await["data"].clone(),
        b.recv_op("msg").await["data"].clone(),
    ];
    got.sort_by_key(|v| v.to_string());
    assert_eq!(got, [json!("job-2"), json!("job-3")]);
    server.stop().await;
}

/// De-duplication holds inside one `POST /v1/publish/batch` and across the batch, socket
/// and single HTTP publishes (PROTOCOL.md §5, §8): one delivery per (`topic`, `msg_id`).
#[tokio::test]
async fn batch_publishes_are_deduplicated() {
    let server = TestServer::start().await;
    let mut s = server.client().await;
    s.sub("bill/*").await;
    let batch = json!([
        {"topic": "bill/a", "data": 1, "msg_id": "inv-1"},
        {"topic": "bill/a", "data": 1, "msg_id": "inv-1"},
        {"topic": "bill/b", "data": 2, "msg_id": "inv-1"},
        {"topic": "bill/a", "data": 3},
    ]);
    let r: Value = post_json(server.http("/v1/publish/batch"), &batch).await;
    let got: Vec<(Value, Value)> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["offset"].clone(), a["duplicate"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (json!(1), json!(false)),
            (json!(1), json!(true)),
            (json!(1), json!(false)),
            (json!(2), json!(false)),
        ],
        "{r}"
    );
    // A second batch and a socket publish repeating the id are duplicates too.
    let again: Value = post_json(
        server.http("/v1/publish/batch"),
        &json!([{"topic": "bill/a", "data": 1, "msg_id": "inv-1"}]),
    )
    .await;
    assert_eq!(again[0]["duplicate"], true, "{again}");
    let mut p = server.client().await;
    let ws = p
        .request(json!({"op": "pub", "topic": "bill/b", "data": 2, "msg_id": "inv-1"}))
        .await;
    assert_eq!(
        (ws["duplicate"].clone(), ws["offset"].clone()),
        (json!(true), json!(1))
    );

    let mut seen = Vec::new();
    while let Some(m) = s.recv_within(Duration::from_millis(300)).await {
        seen.push((m["topic"].clone(), m["data"].clone()));
    }
    assert_eq!(
        seen,
        [
            (json!("bill/a"), json!(1)),
            (json!("bill/b"), json!(2)),
            (json!("bill/a"), json!(3)),
        ]
    );
    server.stop().await;
}

/// A job whose group emptied is not dead-lettered before `max_deliveries` (PROTOCOL.md §5):
/// it waits for a member, and a member joining later (a new group for the same pattern and
/// name) gets it as a redelivery.
#[tokio::test]
async fn a_job_waits_for_a_member_when_its_group_empties() {
    let server = TestServer::with_config(with_topic(TopicConfig {
        pattern: "jobs/**".into(),
        ack_wait: Duration::from_millis(100),
        ..TopicConfig::default()
    }))
    .await;
    let mut dlq = server.client().await;
    dlq.sub("$dlq/**").await;
    let mut a = server.client().await;
    sub_group(&mut a, "jobs/scan", "scan", true).await;
    let mut p = server.client().await;
    p.publish("jobs/scan", json!("job-1")).await;
    assert_eq!(a.recv_op("msg").await["data"], "job-1");
    // The only member leaves without acking: the group is gone.
    a.request(json!({"op": "unsub", "pattern": "jobs/scan", "group": "scan"}))
        .await;
    // Several `ack_wait`s pass with nobody to take the job: it must not be dead-lettered.
    assert!(
        dlq.recv_within(Duration::from_millis(600)).await.is_none(),
        "dead-lettered after one delivery"
    );
    let mut b = server.client().await;
    sub_group(&mut b, "jobs/scan", "scan", true).await;
    let m = b.recv_op("msg").await;
    assert_eq!(
        (
            m["data"].as_str(),
            m["redelivered"].as_bool(),
            m["deliveries"].as_u64()
        ),
        (Some("job-1"), Some(true), Some(2))
    );
    b.send(json!({"op": "ack", "seq": m["seq"]})).await;
    assert!(dlq.recv_within(Duration::from_millis(300)).await.is_none());
    server.stop().await;
}

/// A group that stays empty for the session TTL is abandoned: its job goes to the
/// dead-letter topic then, showing the one delivery it had.
#[tokio::test]
async fn a_job_of_an_abandoned_group_is_dead_lettered_after_the_ttl() {
    let mut cfg = with_topic(TopicConfig {
        pattern: "jobs/**".into(),
        ack_wait: Duration::from_millis(100),
        ..TopicConfig::default()
    });
    cfg.session.ttl = Duration::from_millis(500);
    let server = TestServer::with_config(cfg).await;
    let mut dlq = server.client().await;
    dlq.sub("$dlq/**").await;
    let mut a = server.client().await;
    sub_group(&mut a, "jobs/scan", "scan", true).await;
    a.publish("jobs/scan", json!("job-1")).await;
    assert_eq!(a.recv_op("msg").await["data"], "job-1");
    a.request(json!({"op": "unsub", "pattern": "jobs/scan", "group": "scan"}))
        .await;
    let dead = dlq.recv_op("msg").await;
    assert_eq!(
        dead["data"],
        json!({"topic": "jobs/scan", "data": "job-1", "deliveries": 1, "msg_id": null})
    );
    server.stop().await;
}
