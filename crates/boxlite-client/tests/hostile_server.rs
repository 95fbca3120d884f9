//! The attach session against a server that misbehaves: frames on unknown channels,
//! junk text, an oversized frame, and a connection that ends without an exit. Each is
//! a typed outcome, never a panic or a hang.

use std::time::Duration;

use boxlite_client::{Client, Endpoint, attach};
use futures_util::SinkExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// A one-shot WebSocket server on loopback that sends `frames`, then closes.
async fn serve(frames: Vec<Message>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
        for f in frames {
            if ws.send(f).await.is_err() {
                return;
            }
        }
        let _ = ws.close(None).await;
    });
    format!("http://{addr}")
}

fn client(url: &str) -> Client {
    Client::new(Endpoint::parse(url).unwrap(), None).unwrap()
}

async fn drain(o: &mut attach::Output) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(c) = o.next_chunk().await {
        all.extend(c);
    }
    all
}

#[tokio::test]
async fn junk_is_ignored_and_the_exit_is_read() {
    let url = serve(vec![
        Message::Binary(vec![9, b'x'].into()),
        Message::Binary(vec![1, b'o'].into()),
        Message::Binary(vec![2].into()),
        Message::Text("not json".into()),
        Message::Binary(vec![1, b'k'].into()),
        Message::Text(r#"{"type":"exit","exit_code":3}"#.into()),
    ])
    .await;
    let mut a = attach::attach(&client(&url), "b", "e").await.unwrap();
    assert_eq!(drain(&mut a.stdout).await, b"ok");
    assert_eq!(drain(&mut a.stderr).await, b"");
    assert_eq!(attach::wait(&mut a.exit).await.unwrap(), 3);
}

#[tokio::test]
async fn an_exit_without_a_code_is_minus_one() {
    let url = serve(vec![Message::Text(r#"{"type":"exit"}"#.into())]).await;
    let mut a = attach::attach(&client(&url), "b", "e").await.unwrap();
    assert_eq!(attach::wait(&mut a.exit).await.unwrap(), -1);
}

#[tokio::test]
async fn an_oversized_frame_ends_the_stream_with_an_error() {
    let url = serve(vec![
        Message::Binary(vec![1, b'a'].into()),
        Message::Binary(vec![1u8; 5 << 20].into()),
        Message::Text(r#"{"type":"exit","exit_code":0}"#.into()),
    ])
    .await;
    let mut a = attach::attach(&client(&url), "b", "e").await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), drain(&mut a.stdout))
        .await
        .unwrap();
    assert_eq!(out, b"a", "nothing of the oversized frame is passed on");
    let e = attach::wait(&mut a.exit).await.unwrap_err().to_string();
    assert!(e.contains("WebSocket"), "{e}");
}

#[tokio::test]
async fn a_connection_that_ends_without_an_exit_is_an_error() {
    let url = serve(vec![Message::Binary(vec![1, b'x'].into())]).await;
    let mut a = attach::attach(&client(&url), "b", "e").await.unwrap();
    assert_eq!(drain(&mut a.stdout).await, b"x");
    let e = attach::wait(&mut a.exit).await.unwrap_err().to_string();
    assert!(e.contains("before the execution reported its exit"), "{e}");
    // Stdin to an ended execution is refused, not lost silently.
    let w = a.stdin.write_all(b"late").await.unwrap_err().to_string();
    assert!(w.contains("the execution has ended"), "{w}");
    assert!(a.stdin.close().await.is_err());
}

#[tokio::test]
async fn ids_that_are_path_steps_are_refused_before_any_request() {
    // Nothing listens here: a request would fail differently.
    let c = client("http://127.0.0.1:9");
    for (b, e) in [("..", "e"), ("b", "."), ("", "e")] {
        let err = attach::attach(&c, b, e).await.unwrap_err().to_string();
        assert!(err.contains("not allowed"), "{b:?} {e:?}: {err}");
    }
}
