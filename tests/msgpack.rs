//! The `herald.v1.msgpack` subprotocol (PROTOCOL.md §2) and MessagePack and raw-byte HTTP
//! publishes (§8), against a real server: binary data between msgpack and JSON clients both
//! ways, and bad input answered with `bad_frame` while the connection goes on.

mod common;

use std::time::Duration;

use common::{Raw, TestServer};
use futures_util::{SinkExt, StreamExt};
use herald::config::TopicConfig;
use herald_protocol::msgpack::{from_json, to_json};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(5);

/// A raw msgpack client: frames built as JSON, sent as MessagePack; what arrives is checked
/// to be a binary frame and read back as JSON (with the raw bytes kept for `bin` checks).
struct Mp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Mp {
    async fn connect(server: &TestServer, offer: &str) -> (Mp, Option<String>) {
        let mut req = server.ws_url().into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", offer.parse().unwrap());
        let (ws, res) = tokio_tungstenite::connect_async(req).await.unwrap();
        let chosen = res
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        (Mp { ws }, chosen)
    }

    async fn client(server: &TestServer) -> Mp {
        let (mut c, chosen) = Mp::connect(server, "herald.v1.msgpack").await;
        assert_eq!(chosen.as_deref(), Some("herald.v1.msgpack"));
        c.send(json!({"op": "hello"})).await;
        assert_eq!(c.recv().await.0["op"], "welcome");
        c
    }

    async fn send(&mut self, v: Value) {
        self.send_bytes(from_json(&v.to_string()).unwrap()).await;
    }

    async fn send_bytes(&mut self, b: Vec<u8>) {
        self.ws.send(Message::binary(b)).await.unwrap();
    }

    /// The next frame: as JSON, and its MessagePack bytes.
    async fn recv(&mut self) -> (Value, Vec<u8>) {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("no socket error");
            match m {
                Message::Binary(b) => {
                    let json = to_json(&b).expect("server frames are MessagePack");
                    return (serde_json::from_str(&json).unwrap(), b.to_vec());
                }
                Message::Text(t) => panic!("text frame on a msgpack connection: {t}"),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    async fn recv_op(&mut self, op: &str) -> (Value, Vec<u8>) {
        loop {
            let f = self.recv().await;
            if f.0["op"] == op {
                return f;
            }
        }
    }

    async fn request(&mut self, mut v: Value) -> Value {
        v["id"] = json!("r");
        self.send(v).await;
        loop {
            let (f, _) = self.recv().await;
            if f["id"] == "r" {
                return f;
            }
        }
    }
}

/// `bytes` appear in `frame` as a MessagePack `bin` value.
fn has_bin(frame: &[u8], bytes: &[u8]) -> bool {
    let mut want = Vec::new();
    herald_protocol::msgpack::write::bin(&mut want, bytes);
    frame.windows(want.len()).any(|w| w == want.as_slice())
}

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn msgpack_is_chosen_when_offered_and_plain_json_stays() {
    let server = TestServer::start().await;
    let (_, chosen) = Mp::connect(&server, "herald.v1, herald.v1.msgpack").await;
    assert_eq!(chosen.as_deref(), Some("herald.v1.msgpack"));
    let (_, chosen) = Mp::connect(&server, "herald.v1").await;
    assert_eq!(chosen.as_deref(), Some("herald.v1"));
    // A msgpack session's answers are msgpack, ints stay ints.
    let mut c = Mp::client(&server).await;
    let ok = c.request(json!({"op": "sub", "pattern": "t/*"})).await;
    assert_eq!(ok["op"], "ok", "{ok}");
    let mut j = server.client().await;
    j.publish(
        "t/a",
        json!({"n": 1, "f": 1.5, "s": "é", "l": [null, true]}),
    )
    .await;
    let (m, _) = c.recv_op("msg").await;
    assert_eq!(
        m["data"],
        json!({"n": 1, "f": 1.5, "s": "é", "l": [null, true]})
    );
    assert_eq!(m["topic"], "t/a");
    assert!(
        m["seq"].is_u64() && m["offset"].is_u64() && m["ts"].is_u64(),
        "{m}"
    );
}

#[tokio::test]
async fn binary_data_crosses_between_msgpack_and_json_both_ways() {
    let mut config = common::config();
    config.topics.push(TopicConfig {
        pattern: "bin/**".into(),
        history: 10,
        ..TopicConfig::default()
    });
    let server = TestServer::with_config(config).await;
    let blob: Vec<u8> = (0..=255u8).chain(0..=255).collect();
    let mut mp_sub = Mp::client(&server).await;
    assert_eq!(
        mp_sub
            .request(json!({"op": "sub", "pattern": "bin/**"}))
            .await["op"],
        "ok"
    );
    let mut json_sub = server.client().await;
    json_sub.sub("bin/**").await;

    // A msgpack publisher's bin value: bin for msgpack, {"$base64"} for JSON.
    let mut mp_pub = Mp::client(&server).await;
    let ok = mp_pub
        .request(json!({"op": "pub", "topic": "bin/a", "data": {"img": {"$base64": b64(&blob)}, "w": 2}}))
        .await;
    assert_eq!(ok["op"], "ok", "{ok}");
    let (m, raw) = mp_sub.recv_op("msg").await;
    assert!(has_bin(&raw, &blob), "bin value in {raw:02x?}");
    assert_eq!(m["data"]["w"], 2);
    let m = json_sub.recv_op("msg").await;
    assert_eq!(m["data"], json!({"img": {"$base64": b64(&blob)}, "w": 2}));

    // A JSON publisher's {"$base64"} reaches msgpack as bin.
    json_sub
        .publish("bin/b", json!([{"$base64": b64(b"\x00\x01hi")}]))
        .await;
    let (_, raw) = mp_sub.recv_op("msg").await;
    assert!(has_bin(&raw, b"\x00\x01hi"));
    json_sub.recv_op("msg").await; // its own

    // HTTP: raw bytes and a MessagePack body.
    let http = common::http();
    let res = http
        .post(server.http("/v1/publish?topic=bin/c&msg_id=m1&retain=true"))
        .header("content-type", "application/octet-stream")
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let (m, raw) = mp_sub.recv_op("msg").await;
    assert!(has_bin(&raw, &blob));
    assert_eq!(m["msg_id"], "m1");
    assert_eq!(
        json_sub.recv_op("msg").await["data"],
        json!({"$base64": b64(&blob)})
    );
    let body = from_json(&json!({"topic": "bin/d", "data": {"$base64": b64(b"xyz")}}).to_string())
        .unwrap();
    let res = http
        .post(server.http("/v1/publish"))
        .header("content-type", "application/msgpack")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ack: Value = res.json().await.unwrap();
    assert!(ack["offset"].is_u64(), "{ack}");
    assert!(has_bin(&mp_sub.recv_op("msg").await.1, b"xyz"));
    let batch = from_json(
        &json!([{"topic": "bin/e", "data": 1}, {"topic": "bin/e", "data": {"$base64": "AA=="}}])
            .to_string(),
    )
    .unwrap();
    let res: Value = http
        .post(server.http("/v1/publish/batch"))
        .header("content-type", "application/msgpack")
        .body(batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res.as_array().unwrap().len(), 2, "{res}");
    assert_eq!(
        json_sub.recv_op("msg").await["data"],
        json!({"$base64": b64(b"xyz")})
    );
    assert_eq!(json_sub.recv_op("msg").await["data"], 1);
    assert_eq!(
        json_sub.recv_op("msg").await["data"],
        json!({"$base64": "AA=="})
    );

    // History over msgpack carries bin too.
    let (mut h, _) = Mp::connect(&server, "herald.v1.msgpack").await;
    h.send(json!({"op": "hello"})).await;
    h.recv().await;
    h.send(json!({"op": "history", "id": "h", "topic": "bin/a"}))
        .await;
    let (ok, raw) = h.recv_op("ok").await;
    assert_eq!(ok["messages"].as_array().unwrap().len(), 1, "{ok}");
    assert!(has_bin(&raw, &blob));
}

#[tokio::test]
async fn many_msgpack_and_json_subscribers_get_every_message() {
    let server = TestServer::start().await;
    let mut mps = Vec::new();
    let mut jsons = Vec::new();
    for _ in 0..10 {
        let mut c = Mp::client(&server).await;
        assert_eq!(
            c.request(json!({"op": "sub", "pattern": "f/*"})).await["op"],
            "ok"
        );
        mps.push(c);
        let mut j = server.client().await;
        j.sub("f/*").await;
        jsons.push(j);
    }
    let mut p = Mp::client(&server).await;
    for i in 0..200u64 {
        p.send(json!({"op": "pub", "topic": "f/x", "data": {"i": i, "b": {"$base64": b64(&i.to_be_bytes())}}}))
            .await;
    }
    for c in &mut mps {
        for i in 0..200u64 {
            let (m, raw) = c.recv_op("msg").await;
            assert_eq!(m["data"]["i"], i);
            assert!(has_bin(&raw, &i.to_be_bytes()));
        }
    }
    for j in &mut jsons {
        for i in 0..200u64 {
            let m = j.recv_op("msg").await;
            assert_eq!(m["data"]["b"]["$base64"], b64(&i.to_be_bytes()));
        }
    }
}

#[tokio::test]
async fn bad_msgpack_gets_bad_frame_and_the_connection_goes_on() {
    let server = TestServer::start().await;
    let mut c = Mp::client(&server).await;
    let mut nan = vec![0x82];
    nan.extend(from_json(r#""op""#).unwrap());
    nan.extend(from_json(r#""pub""#).unwrap());
    nan.extend(from_json(r#""data""#).unwrap());
    herald_protocol::msgpack::write::f64(&mut nan, f64::NAN);
    let cases: Vec<Vec<u8>> = vec![
        vec![0x92, 0x01],                       // truncated
        vec![0xc1],                             // never used
        vec![0x81, 0x01, 0x02],                 // integer key
        vec![0xd4, 0x01, 0x00],                 // ext
        vec![0xa1, 0xff],                       // not UTF-8
        vec![0x80, 0x80],                       // trailing bytes
        [vec![0x91; 200], vec![0xc0]].concat(), // too deep
        nan,
        from_json(r#"["op","ping"]"#).unwrap(), // an array, not a map
    ];
    for bad in cases {
        c.send_bytes(bad.clone()).await;
        let (e, _) = c.recv_op("error").await;
        assert_eq!(e["code"], "bad_frame", "{bad:02x?}: {e}");
    }
    c.ws.send(Message::text(r#"{"op":"sub","pattern":"x"}"#))
        .await
        .unwrap();
    let (e, _) = c.recv_op("error").await;
    assert_eq!(e["code"], "bad_frame");
    assert!(e["message"].as_str().unwrap().contains("msgpack"), "{e}");
    // Still a working connection.
    assert_eq!(
        c.request(json!({"op": "sub", "pattern": "x"})).await["op"],
        "ok"
    );
    let mut j = Raw::connect(&server.ws_url()).await;
    j.hello().await;
    j.publish("x", json!(1)).await;
    assert_eq!(c.recv_op("msg").await.0["data"], 1);

    // HTTP: a body that is not MessagePack, raw bytes without a topic or with bad options.
    let http = common::http();
    for (url, ct, body) in [
        ("/v1/publish", "application/msgpack", vec![0xc1]),
        ("/v1/publish/batch", "application/msgpack", vec![0x91]),
        ("/v1/publish", "application/octet-stream", vec![1, 2]),
        (
            "/v1/publish",
            "application/msgpack",
            from_json(r#"["t", 1]"#).unwrap(),
        ),
        (
            "/v1/publish?topic=x&retain=maybe",
            "application/octet-stream",
            vec![1],
        ),
        (
            "/v1/publish?topic=x&bogus=1",
            "application/octet-stream",
            vec![1],
        ),
    ] {
        let res = http
            .post(server.http(url))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{url}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["code"], "bad_request", "{url}: {v}");
    }
}

#[tokio::test]
async fn the_rust_client_speaks_msgpack() {
    use herald_client::{Client, ClientOptions, binary, binary_of};
    let server = TestServer::start().await;
    let options = ClientOptions {
        msgpack: true,
        ..ClientOptions::default()
    };
    let c = Client::connect_with(&server.ws_url(), options.clone())
        .await
        .unwrap();
    let mut sub = c.subscribe("r/*").await.unwrap();
    let blob = vec![0u8, 255, 7, 42];
    c.publish("r/a", &json!({"b": binary(&blob), "n": 3}))
        .await
        .unwrap();
    let m = tokio::time::timeout(WAIT, sub.next_msg())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(binary_of(&m.data["b"]), Some(blob.clone()));
    assert_eq!(m.data["n"], 3);
    // A JSON subscriber sees base64.
    let mut j = server.client().await;
    j.sub("r/*").await;
    c.publish("r/b", &binary(&blob)).await.unwrap();
    assert_eq!(j.recv_op("msg").await["data"], binary(&blob));
    // Request-reply across encodings.
    let responder = Client::connect(&server.ws_url()).await.unwrap();
    let mut reqs = responder.subscribe("svc/echo").await.unwrap();
    tokio::spawn(async move {
        while let Some(m) = reqs.next_msg().await {
            let to = m.reply_to.clone().unwrap();
            responder.publish(&to, &m.data).await.unwrap();
        }
    });
    let answer = c
        .request("svc/echo", &binary(&blob), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(binary_of(&answer), Some(blob));
    // A server that will not speak msgpack (here: a plain HTTP endpoint) fails the connect.
    let url = format!("ws://{}/healthz", server.addr);
    assert!(Client::connect_with(&url, options).await.is_err());
}
