//! Criterion benchmarks of secure links: the candidate ciphers side by side, sealed-record
//! throughput against the raw AEAD ceiling, and small messages with grouping against one
//! record per message.
//!
//! `cargo bench -p iris-benches --bench link`

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce};
use bytes::Bytes;
use chacha20poly1305::ChaCha20Poly1305;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iris_proto::Instant;
use iris_proto::inspect::{Link, LinkEvent, LinkInput, Role};
use iris_proto::{LinkConfig, NetworkKey};
use std::hint::black_box;
use std::sync::Arc;

fn established(max_record: usize) -> (Link, Link) {
    let pem = include_bytes!("../../iris-proto/tests/fixtures/net-pkcs8.pem");
    let key = Arc::new(NetworkKey::from_bytes(pem).unwrap());
    let cfg = LinkConfig {
        network: "bench".into(),
        max_record,
        max_data_queue: 64 << 20,
        ..LinkConfig::default()
    };
    let mut a = Link::new(
        Role::Initiator,
        key.clone(),
        cfg.clone(),
        [1; 32],
        Instant::ZERO,
    );
    let mut b = Link::new(Role::Responder, key, cfg, [2; 32], Instant::ZERO);
    for _ in 0..4 {
        while let Some(f) = a.poll_transmit() {
            b.handle(Instant::ZERO, LinkInput::Bytes(&f));
        }
        while let Some(f) = b.poll_transmit() {
            a.handle(Instant::ZERO, LinkInput::Bytes(&f));
        }
    }
    assert!(a.is_open() && b.is_open());
    while a.poll_output().is_some() {}
    while b.poll_output().is_some() {}
    (a, b)
}

/// Moves everything queued on `a` to `b`; returns the messages delivered. Each frame is
/// handed over as the buffer a socket read would have filled (the kernel's copy is outside
/// the measurement, as it is outside the raw AEAD baseline).
fn transfer(a: &mut Link, b: &mut Link) -> usize {
    let mut n = 0;
    while let Some(f) = a.poll_transmit() {
        b.handle(
            Instant::ZERO,
            LinkInput::Buf(
                f.try_into_mut()
                    .unwrap_or_else(|f| bytes::BytesMut::from(&f[..])),
            ),
        );
        while let Some(e) = b.poll_output() {
            if let LinkEvent::Data(m) = e {
                black_box(m);
                n += 1;
            }
        }
    }
    n
}

/// A counter nonce, as the link's records use.
fn nonce<A: AeadInOut>(counter: u64) -> Nonce<A> {
    let mut n = Nonce::<A>::default();
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// Seals `buf` in place under `cipher` with the next counter nonce.
fn seal<A: AeadInOut>(cipher: &A, counter: &mut u64, buf: &mut [u8]) {
    *counter += 1;
    let tag = cipher
        .encrypt_inout_detached(&nonce::<A>(*counter), b"header", buf.into())
        .unwrap();
    black_box(tag);
}

/// Seals then opens `buf` in place: what a record costs its two ends.
fn seal_open<A: AeadInOut>(cipher: &A, counter: &mut u64, buf: &mut [u8]) {
    *counter += 1;
    let n = nonce::<A>(*counter);
    let tag = cipher
        .encrypt_inout_detached(&n, b"header", (&mut *buf).into())
        .unwrap();
    cipher
        .decrypt_inout_detached(&n, b"header", buf.into(), &tag)
        .unwrap();
}

/// The candidate ciphers (default builds, as the node is built): seal and seal+open of one
/// record of each size. The link uses AES-256-GCM (`iris-proto/src/link/record.rs`).
fn cipher(c: &mut Criterion) {
    let aes = Aes256Gcm::new(&[7u8; 32].into());
    let chacha = ChaCha20Poly1305::new(&[7u8; 32].into());
    for size in [64usize, 1024, 16 << 10, 64 << 10] {
        let mut g = c.benchmark_group(format!("cipher_{size}B"));
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0x5au8; size];
        let mut counter = 0u64;
        g.bench_function("aes256gcm_seal", |b| {
            b.iter(|| seal(&aes, &mut counter, &mut buf))
        });
        g.bench_function("chacha20poly1305_seal", |b| {
            b.iter(|| seal(&chacha, &mut counter, &mut buf))
        });
        g.bench_function("aes256gcm_seal_open", |b| {
            b.iter(|| seal_open(&aes, &mut counter, &mut buf))
        });
        g.bench_function("chacha20poly1305_seal_open", |b| {
            b.iter(|| seal_open(&chacha, &mut counter, &mut buf))
        });
        g.finish();
    }
}

/// 64 KiB messages: raw AES-256-GCM (the links' cipher) seal+open of the same bytes,
/// against a link's seal, frame, open and reassembly.
fn bulk(c: &mut Criterion) {
    let size = 64 * 1024;
    let mut g = c.benchmark_group("link_bulk_64KiB");
    g.throughput(Throughput::Bytes(size as u64));
    let cipher = Aes256Gcm::new(&[7u8; 32].into());
    let mut buf = vec![0x5au8; size];
    let mut counter = 0u64;
    g.bench_function("raw_aead_seal", |bench| {
        bench.iter(|| seal(&cipher, &mut counter, &mut buf))
    });
    g.bench_function("raw_aead_seal_open", |bench| {
        bench.iter(|| seal_open(&cipher, &mut counter, &mut buf))
    });
    // Records of 16 KiB, and the default (large enough for the whole message).
    for record in [16 * 1024, LinkConfig::default().max_record] {
        let (mut a, _b) = established(record);
        let msg = Bytes::from(vec![0x5au8; size]);
        g.bench_function(BenchmarkId::new("link_seal", record), |bench| {
            bench.iter(|| {
                a.send_data(msg.clone()).unwrap();
                while let Some(f) = a.poll_transmit() {
                    black_box(f);
                }
            })
        });
        let (mut a, mut b) = established(record);
        g.bench_function(BenchmarkId::new("link_seal_open", record), |bench| {
            bench.iter(|| {
                a.send_data(msg.clone()).unwrap();
                assert_eq!(transfer(&mut a, &mut b), 1);
            })
        });
    }
    g.finish();
}

/// 64-byte messages through seal+open: grouped (1000 queued, then drained) against one
/// record per message (each drained before the next is queued).
fn small(c: &mut Criterion) {
    let batch = 1000;
    let mut g = c.benchmark_group("link_64B_messages");
    g.throughput(Throughput::Elements(batch as u64));
    let msg = Bytes::from(vec![0x5au8; 64]);
    let record = LinkConfig::default().max_record;
    let (mut a, mut b) = established(record);
    g.bench_function("grouped", |bench| {
        bench.iter(|| {
            for _ in 0..batch {
                a.send_data(msg.clone()).unwrap();
            }
            assert_eq!(transfer(&mut a, &mut b), batch);
        })
    });
    let (mut a, mut b) = established(record);
    g.bench_function("one_record_each", |bench| {
        bench.iter(|| {
            for _ in 0..batch {
                a.send_data(msg.clone()).unwrap();
                assert_eq!(transfer(&mut a, &mut b), 1);
            }
        })
    });
    g.finish();
}

/// The cost of handshakes on one core: a genuine one (both ends: two X25519 keys, one
/// signature and one verification each), and what a stranger replaying a genuine member's
/// first flight (HELLO, AUTH) costs the responder it reaches.
fn handshakes(c: &mut Criterion) {
    let pem = include_bytes!("../../iris-proto/tests/fixtures/net-pkcs8.pem");
    let key = Arc::new(NetworkKey::from_bytes(pem).unwrap());
    let cfg = LinkConfig {
        network: "bench".into(),
        ..LinkConfig::default()
    };
    // Every link gets randomness of its own, as on a node: a responder with the recorded
    // one's seed would pick the same ephemeral key, and the replay would be genuine.
    let mut seed = 0u64;
    let pair = |n: &mut u64| {
        *n += 1;
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&n.to_le_bytes());
        let i = Link::new(Role::Initiator, key.clone(), cfg.clone(), s, Instant::ZERO);
        s[8] = 1;
        let r = Link::new(Role::Responder, key.clone(), cfg.clone(), s, Instant::ZERO);
        (i, r)
    };
    // A genuine member's first flight, recorded.
    let (mut i, mut r) = pair(&mut seed);
    let mut flight = Vec::new();
    for _ in 0..4 {
        while let Some(f) = i.poll_transmit() {
            flight.extend_from_slice(&f);
            r.handle(Instant::ZERO, LinkInput::Bytes(&f));
        }
        while let Some(f) = r.poll_transmit() {
            i.handle(Instant::ZERO, LinkInput::Bytes(&f));
        }
    }
    assert!(i.is_open() && r.is_open());
    let mut g = c.benchmark_group("handshake");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    g.bench_function("genuine_both_ends", |b| {
        b.iter(|| {
            let (mut i, mut r) = pair(&mut seed);
            for _ in 0..4 {
                while let Some(f) = i.poll_transmit() {
                    r.handle(Instant::ZERO, LinkInput::Bytes(&f));
                }
                while let Some(f) = r.poll_transmit() {
                    i.handle(Instant::ZERO, LinkInput::Bytes(&f));
                }
            }
            assert!(i.is_open() && r.is_open());
        })
    });
    // The same handshake as a node runs it: signatures offloaded to the driver's blocking
    // pool. Timed is what stays on the node's thread (both ends' share, the signing itself
    // left out): two X25519 keys and exchanges, two RSA verifications, HKDF.
    let offload = LinkConfig {
        offload_signatures: true,
        ..cfg.clone()
    };
    g.bench_function("genuine_both_ends_node_thread_offloaded", |b| {
        b.iter_custom(|iters| {
            let mut on_thread = std::time::Duration::ZERO;
            for _ in 0..iters {
                seed += 1;
                let mut s = [0u8; 32];
                s[..8].copy_from_slice(&seed.to_le_bytes());
                let start = std::time::Instant::now();
                let mut i = Link::new(
                    Role::Initiator,
                    key.clone(),
                    offload.clone(),
                    s,
                    Instant::ZERO,
                );
                s[8] = 1;
                let mut r = Link::new(
                    Role::Responder,
                    key.clone(),
                    offload.clone(),
                    s,
                    Instant::ZERO,
                );
                let mut mark = start;
                for _ in 0..6 {
                    while let Some(f) = i.poll_transmit() {
                        r.handle(Instant::ZERO, LinkInput::Bytes(&f));
                    }
                    while let Some(f) = r.poll_transmit() {
                        i.handle(Instant::ZERO, LinkInput::Bytes(&f));
                    }
                    for link in [&mut i, &mut r] {
                        while let Some(e) = link.poll_output() {
                            if let LinkEvent::Sign(to_sign) = e {
                                on_thread += mark.elapsed();
                                let sig = key.sign_seeded([3; 32], &to_sign.message);
                                mark = std::time::Instant::now();
                                link.handle(Instant::ZERO, LinkInput::Signed(&sig));
                            }
                        }
                    }
                }
                on_thread += mark.elapsed();
                assert!(i.is_open() && r.is_open());
            }
            on_thread
        })
    });
    g.bench_function("replayed_first_flight_at_the_responder", |b| {
        b.iter(|| {
            let (_, mut r) = pair(&mut seed);
            r.handle(Instant::ZERO, LinkInput::Bytes(&flight));
            while r.poll_transmit().is_some() {}
            assert!(!r.is_open());
            black_box(r.stats().signatures)
        })
    });
    g.finish();
}

criterion_group!(benches, cipher, bulk, small, handshakes);
criterion_main!(benches);
