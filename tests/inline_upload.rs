//! A small payload travels attached to its request; these tests put the client (`Cloud::call`)
//! in front of a scripted server on loopback to check the paths a real cluster rarely takes:
//! the server's `Accepted` is lost (the client must still take the result, learning where from
//! the reply), the result comes attached to the reply (at once, or only when the client asks
//! again after a reply without it), and the winner has no copy of the payload (it asks for an
//! upload instead).

mod support;

use client::cloud::Cloud;
use common::config::{ClusterConfig, ServerEntry};
use common::protocol::{decode, encode_attached, encode_msg, encode_xfer, transfer_id, Answer, Frame, Msg, Reply};
use common::transfer::{TransferConfig, TransferEvent, Transfers};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// What the scripted server does after the attached request arrives.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// It has the payload and says so, but the `Accepted` never reaches the client.
    AcceptedLost,
    /// It has no copy: `Accepted` without `inline`, then it receives the upload.
    AskForUpload,
    /// The result attached to the reply: no `Accepted`, no transfer.
    ResultAttached,
    /// First a reply without the result (as a server that did not run it gives); the result
    /// attached to the reply only when the client sends the request again.
    ResultOnAskingAgain,
}

/// Runs the scripted server until the client is done; returns (attached payload, uploaded payload).
fn serve(sock: UdpSocket, script: Script, result: Vec<u8>) -> (Vec<u8>, Option<Vec<u8>>) {
    sock.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    let start = Instant::now();
    let now = || start.elapsed().as_millis() as u64;
    let mut xfers: Transfers<std::net::SocketAddr> = Transfers::new(TransferConfig::default());
    let mut buf = vec![0u8; 70_000];
    let (mut attached, mut uploaded, mut rid_seen) = (None, None, None);
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            match decode(&buf[..n]) {
                Ok(Frame::Attached(Msg::Request { rid, op }, payload)) if rid_seen.is_none() => {
                    rid_seen = Some(rid);
                    attached = Some(payload);
                    let len = result.len() as u64;
                    let (upload, out) = (transfer_id(rid, 0), transfer_id(rid, 1));
                    let reply =
                        Msg::Reply(Reply { rid, server: 1, result: Ok(Answer::Encrypted { len, transfer: out }) });
                    match script {
                        Script::AcceptedLost => {
                            // The result's first chunks arrive before the reply: the client
                            // drops them, then takes their retransmissions.
                            xfers.send(now(), out, from, result.clone()).unwrap();
                            while let Some((to, m)) = xfers.poll_send() {
                                let _ = sock.send_to(&encode_xfer(&m), to);
                            }
                            sock.send_to(&encode_msg(&reply), from).unwrap();
                        }
                        Script::ResultAttached => {
                            let bytes = encode_attached(&reply, &result).expect("fits a datagram");
                            sock.send_to(&bytes, from).unwrap();
                            return (attached.unwrap_or_default(), None);
                        }
                        Script::ResultOnAskingAgain => sock.send_to(&encode_msg(&reply), from).map(|_| ()).unwrap(),
                        Script::AskForUpload => {
                            let common::protocol::Op::Encrypt { len: up, .. } = op else { panic!("{op:?}") };
                            xfers.expect(now(), upload, from, up as usize).unwrap();
                            let accepted = Msg::Started { rid, server: 1, transfer: upload, inline: false };
                            sock.send_to(&encode_msg(&accepted), from).unwrap();
                        }
                    }
                }
                Ok(Frame::Ctl(Msg::Request { rid, .. })) if Some(rid) == rid_seen => {
                    if let Script::ResultOnAskingAgain = script {
                        let answer = Answer::Encrypted { len: result.len() as u64, transfer: transfer_id(rid, 1) };
                        let reply = Msg::Reply(Reply { rid, server: 1, result: Ok(answer) });
                        sock.send_to(&encode_attached(&reply, &result).expect("fits"), from).unwrap();
                        return (attached.unwrap_or_default(), None);
                    }
                }
                Ok(Frame::Xfer(x)) => xfers.step(now(), from, x),
                _ => {}
            }
        }
        xfers.tick(now());
        while let Some((to, m)) = xfers.poll_send() {
            let _ = sock.send_to(&encode_xfer(&m), to);
        }
        while let Some(ev) = xfers.poll_event() {
            match ev {
                TransferEvent::Received { from, payload, .. } => {
                    uploaded = Some(payload);
                    // The upload is in: the result follows, and the reply.
                    let Some(rid) = rid_seen else { panic!("an upload before the request") };
                    let out = transfer_id(rid, 1);
                    xfers.send(now(), out, from, result.clone()).unwrap();
                    let answer = Answer::Encrypted { len: result.len() as u64, transfer: out };
                    let reply = Msg::Reply(Reply { rid, server: 1, result: Ok(answer) });
                    sock.send_to(&encode_msg(&reply), from).unwrap();
                }
                TransferEvent::Sent { .. } => return (attached.unwrap_or_default(), uploaded),
                _ => {}
            }
        }
    }
    panic!("the scripted server gave up ({script:?})");
}

/// The scripted server's socket and a one-server cluster config that points at it.
fn scripted_server() -> (UdpSocket, ClusterConfig) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let cfg = ClusterConfig::with_servers(vec![ServerEntry::new(1, addr, "127.0.0.1:9".parse().unwrap())]);
    (sock, cfg)
}

fn run(script: Script) {
    let (sock, cfg) = scripted_server();
    let result: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    let expected = result.clone();
    let server = std::thread::spawn(move || serve(sock, script, expected));
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let sent = payload.clone();
    std::thread::spawn(move || {
        let mut cloud = Cloud::connect_direct(&cfg, None).unwrap();
        cloud.set_secret(vec![7; 32]); // signed, as every encrypt is (the scripted server does not check)
        let _ = tx.send(cloud.call(support::encrypt_op("zed", sent.len()), Some(&sent)));
    });
    let got = rx.recv_timeout(Duration::from_secs(10)).expect("the call ends").expect("answered");
    assert_eq!(got.blob.as_deref(), Some(&result[..]), "{script:?}: the result, byte-exact");
    let (attached, uploaded) = server.join().unwrap();
    assert_eq!(attached, payload, "{script:?}: the payload came with the request");
    match script {
        Script::AcceptedLost | Script::ResultAttached | Script::ResultOnAskingAgain => {
            assert_eq!(uploaded, None, "nothing uploaded")
        }
        Script::AskForUpload => assert_eq!(uploaded.as_deref(), Some(&payload[..]), "uploaded when asked"),
    }
}

#[test]
fn the_result_is_taken_even_when_accepted_is_lost() {
    run(Script::AcceptedLost);
}

#[test]
fn a_server_without_the_attached_copy_gets_an_upload() {
    run(Script::AskForUpload);
}

#[test]
fn a_result_attached_to_the_reply_is_taken() {
    run(Script::ResultAttached);
}

#[test]
fn a_reply_without_its_result_makes_the_client_ask_again() {
    run(Script::ResultOnAskingAgain);
}

#[test]
fn a_result_lost_with_its_server_fails_the_call_soon() {
    // The scripted server replies without the result, then goes away: the result is lost.
    let (sock, cfg) = scripted_server();
    let server = std::thread::spawn(move || {
        let mut buf = vec![0u8; 70_000];
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        let Ok(Frame::Attached(Msg::Request { rid, .. }, _)) = decode(&buf[..n]) else { panic!("a request first") };
        let answer = Answer::Encrypted { len: 40_000, transfer: transfer_id(rid, 1) };
        let reply = Msg::Reply(Reply { rid, server: 1, result: Ok(answer) });
        sock.send_to(&encode_msg(&reply), from).unwrap();
    });
    let payload = vec![5u8; 10_000];
    let mut cloud = Cloud::connect_direct(&cfg, None).unwrap();
    cloud.set_secret(vec![7; 32]);
    let got = cloud.call(support::encrypt_op("zed", payload.len()), Some(&payload));
    server.join().unwrap();
    // Not the transfer's own give-up ("transfer failed"), which comes later.
    let err = got.expect_err("the result is lost");
    assert!(err.contains("no longer answers"), "{err}");
}
