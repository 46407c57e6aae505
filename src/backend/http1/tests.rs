//! Answers of every framing, fed to `exchange` through an in-memory pipe in pieces.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const REQUEST: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";

/// Runs one exchange against a peer that reads the request, then writes `answer` in pieces
/// of `piece` bytes and closes when `close` is set.
async fn run(
    answer: &[u8],
    piece: usize,
    close: bool,
    max: usize,
) -> Result<Answer, ExchangeError> {
    let (mut ours, mut theirs) = tokio::io::duplex(1 << 16);
    let answer = answer.to_vec();
    let peer = tokio::spawn(async move {
        let mut got = vec![0; REQUEST.len()];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(got, REQUEST);
        for part in answer.chunks(piece.max(1)) {
            if theirs.write_all(part).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        if !close {
            // Keep the pipe open until the exchange is done.
            let _ = theirs.read(&mut [0; 1]).await;
        }
    });
    let r = exchange(&mut ours, REQUEST, max).await;
    drop(ours);
    peer.await.unwrap();
    r
}

#[tokio::test]
async fn content_length_in_any_pieces() {
    let a = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"allow\":true}";
    for piece in [1, 3, 17, 1000] {
        let r = run(a, piece, false, 1 << 20).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], br#"{"allow":true}"#);
        assert!(r.reusable, "piece {piece}");
    }
}

#[tokio::test]
async fn chunked_with_extensions_and_trailers() {
    let a = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\n{\"all\r\n9\r\now\":true}\r\n0\r\nX-Trailer: y\r\n\r\n";
    for piece in [1, 7, 1000] {
        let r = run(a, piece, false, 1 << 20).await.unwrap();
        assert_eq!(&r.body[..], br#"{"allow":true}"#);
        assert!(r.reusable);
    }
}

#[tokio::test]
async fn until_close_and_connection_close_are_not_reused() {
    let a = b"HTTP/1.1 200 OK\r\n\r\n{\"allow\":true}";
    let r = run(a, 4, true, 1 << 20).await.unwrap();
    assert_eq!(&r.body[..], br#"{"allow":true}"#);
    assert!(!r.reusable);

    let a = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}";
    assert!(!run(a, 100, true, 100).await.unwrap().reusable);

    // HTTP/1.0 keeps a connection only when it says so.
    let a = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    assert!(!run(a, 100, true, 100).await.unwrap().reusable);
    let a = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}";
    assert!(run(a, 100, false, 100).await.unwrap().reusable);
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let a = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n\
        HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
    let r = run(a, 5, false, 100).await.unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(&r.body[..], b"{}");
}

#[tokio::test]
async fn no_body_statuses_and_errors_keep_the_connection() {
    let r = run(b"HTTP/1.1 204 No Content\r\n\r\n", 100, false, 100)
        .await
        .unwrap();
    assert_eq!((r.status, r.body.len(), r.reusable), (204, 0, true));
    let a = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy";
    let r = run(a, 100, false, 100).await.unwrap();
    assert_eq!((r.status, &r.body[..]), (503, &b"busy"[..]));
}

#[tokio::test]
async fn a_close_before_any_answer_is_closed_and_after_is_malformed() {
    assert!(matches!(
        run(b"", 1, true, 100).await,
        Err(ExchangeError::Closed)
    ));
    let r = run(b"HTTP/1.1 200 OK\r\nContent-", 4, true, 100).await;
    assert!(matches!(r, Err(ExchangeError::Malformed(_))), "{r:?}");
    let r = run(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
        4,
        true,
        100,
    )
    .await;
    assert!(matches!(r, Err(ExchangeError::Malformed(_))), "{r:?}");
    let r = run(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        4,
        true,
        100,
    )
    .await;
    assert!(matches!(r, Err(ExchangeError::Malformed(_))), "{r:?}");
    // After an interim answer the request was received: not something to send again.
    let r = run(b"HTTP/1.1 100 Continue\r\n\r\n", 4, true, 100).await;
    assert!(matches!(r, Err(ExchangeError::Malformed(_))), "{r:?}");
}

#[tokio::test]
async fn garbage_and_oversize_are_refused() {
    for bad in [
        &b"SMTP ready\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
    ] {
        let r = run(bad, 100, true, 100).await;
        assert!(matches!(r, Err(ExchangeError::Malformed(_))), "{r:?}");
    }
    let big = b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n";
    assert!(matches!(
        run(big, 100, true, 100).await,
        Err(ExchangeError::TooLarge(100))
    ));
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"28\r\n");
        chunked.extend_from_slice(&[b' '; 40]);
        chunked.extend_from_slice(b"\r\n");
    }
    let r = run(&chunked, 1000, true, 100).await;
    assert!(matches!(r, Err(ExchangeError::TooLarge(100))), "{r:?}");
    let mut endless = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    endless.extend_from_slice(&[b' '; 300]);
    let r = run(&endless, 50, true, 100).await;
    assert!(matches!(r, Err(ExchangeError::TooLarge(100))), "{r:?}");
    let mut long_head = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
    long_head.extend_from_slice(&vec![b'a'; MAX_HEAD]);
    let r = run(&long_head, 8192, true, 100).await;
    assert!(matches!(r, Err(ExchangeError::Malformed(_))), "{r:?}");
}

#[tokio::test]
async fn bytes_past_the_body_make_the_connection_unusable() {
    let a = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n";
    let r = run(a, 1000, false, 100).await.unwrap();
    assert_eq!(&r.body[..], b"{}");
    assert!(!r.reusable);
}
