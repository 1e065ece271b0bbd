use super::*;
use proptest::prelude::*;

fn limits() -> Limits {
    Limits::default()
}

fn encode_c(p: &ClientPacket) -> BytesMut {
    let mut b = BytesMut::new();
    p.encode(&mut b);
    b
}

fn encode_n(p: &NodePacket) -> BytesMut {
    let mut b = BytesMut::new();
    p.encode(&mut b);
    b
}

#[test]
fn whole_message_varints_take_what_they_use_and_refuse_the_rest() {
    for v in [0u64, 1, 127, 128, 300, 65536, u64::MAX] {
        let mut b = BytesMut::new();
        put_varint(&mut b, v);
        b.extend_from_slice(b"tail");
        let mut p = &b[..];
        assert_eq!(take_varint(&mut p), Some((v, varint_len(v))));
        assert_eq!(p, b"tail");
        // Cut anywhere inside the varint: truncated.
        let mut cut = &b[..varint_len(v) - 1];
        assert_eq!(take_varint(&mut cut), None);
    }
    // A padded encoding is read, and says how long it was.
    let mut padded = &[0x81u8, 0x00][..];
    assert_eq!(take_varint(&mut padded), Some((1, 2)));
    // Eleven bytes, or a tenth byte past 64 bits: refused.
    let mut long = &[0x80u8; 11][..];
    assert_eq!(take_varint(&mut long), None);
    let mut wide = &[0xffu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..];
    assert_eq!(take_varint(&mut wide), None);
}

#[test]
fn varint_examples_from_the_spec() {
    for (v, wire) in [
        (0u64, &[0x00][..]),
        (300, &[0xac, 0x02]),
        (65536, &[0x80, 0x80, 0x04]),
        (4194304, &[0x80, 0x80, 0x80, 0x02]),
        (
            u64::MAX,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
    ] {
        let mut b = BytesMut::new();
        put_varint(&mut b, v);
        assert_eq!(&b[..], wire, "encoding {v}");
        let l = limits();
        let mut r = Reader::new(wire, &l);
        assert!(matches!(r.varint(), Ok(x) if x == v));
        assert_eq!(r.pos, wire.len());
    }
}

#[test]
fn handshake_bytes_match_the_spec_example() {
    let init = ClientPacket::Init {
        magic: Bytes::from_static(CLIENT_MAGIC.as_bytes()),
        version: Bytes::from_static(PROTOCOL_VERSION.as_bytes()),
        cluster: "echo".into(),
    };
    let mut want = vec![0x00, 0x11];
    want.extend_from_slice(b"iris-client-magic");
    want.push(0x0b);
    want.extend_from_slice(b"v1.0-draft2");
    want.push(0x04);
    want.extend_from_slice(b"echo");
    assert_eq!(&encode_c(&init)[..], &want[..]);

    let reply = NodePacket::Init {
        magic: Bytes::from_static(RELAY_MAGIC.as_bytes()),
        version: Bytes::from_static(PROTOCOL_VERSION.as_bytes()),
    };
    let mut want = vec![0x00, 0x10];
    want.extend_from_slice(b"iris-relay-magic");
    want.push(0x0b);
    want.extend_from_slice(b"v1.0-draft2");
    assert_eq!(&encode_n(&reply)[..], &want[..]);
}

#[test]
fn asymmetric_layouts() {
    // Node REPLY carries timedOut before success; a timed-out one has nothing after it.
    let timed_out = NodePacket::Reply {
        id: 7,
        outcome: ReplyOutcome::TimedOut,
    };
    assert_eq!(&encode_n(&timed_out)[..], &[0x05, 0x07, 0x01]);
    let empty_ok = NodePacket::Reply {
        id: 7,
        outcome: ReplyOutcome::Success(Bytes::new()),
    };
    assert_eq!(&encode_n(&empty_ok)[..], &[0x05, 0x07, 0x00, 0x01, 0x00]);
    // Client REPLY has no timedOut flag.
    let client_fault = ClientPacket::Reply {
        id: 1,
        outcome: Err("no".into()),
    };
    assert_eq!(
        &encode_c(&client_fault)[..],
        &[0x05, 0x01, 0x00, 0x02, b'n', b'o']
    );
    // Client TUN_CLOSE has no reason; the node's has one.
    assert_eq!(
        &encode_c(&ClientPacket::TunClose { tun_id: 3 })[..],
        &[0x0d, 0x03]
    );
    let node_close = NodePacket::TunClose {
        tun_id: 3,
        reason: Name::default(),
    };
    assert_eq!(&encode_n(&node_close)[..], &[0x0d, 0x03, 0x00]);
    // Node BROADCAST has no cluster field.
    let bc = NodePacket::Broadcast {
        message: Bytes::from_static(b"hi"),
    };
    assert_eq!(&encode_n(&bc)[..], &[0x03, 0x02, b'h', b'i']);
    // TUN_CONFIRM: timed out, or not timed out and a chunk limit.
    let confirm = NodePacket::TunConfirm {
        tun_id: 1,
        chunk_limit: Some(65536),
    };
    assert_eq!(
        &encode_n(&confirm)[..],
        &[0x0a, 0x01, 0x00, 0x80, 0x80, 0x04]
    );
}

#[test]
fn incomplete_input_leaves_the_buffer_alone() {
    let p = ClientPacket::Request {
        id: 42,
        cluster: "svc".into(),
        request: Bytes::from(vec![9u8; 1000]),
        timeout_ms: 1,
    };
    let wire = encode_c(&p);
    for cut in 0..wire.len() {
        let mut buf = BytesMut::from(&wire[..cut]);
        assert_eq!(decode_client(&mut buf, &limits()), Ok(None), "cut at {cut}");
        assert_eq!(buf.len(), cut);
    }
    let mut buf = wire.clone();
    assert_eq!(decode_client(&mut buf, &limits()), Ok(Some(p)));
    assert!(buf.is_empty());
}

#[test]
fn bad_input_is_rejected_without_buffering() {
    let l = limits();
    let cases: Vec<(Vec<u8>, DecodeError)> = vec![
        (vec![0x0e], DecodeError::UnknownOpcode(0x0e)),
        (vec![0xff, 1, 2, 3], DecodeError::UnknownOpcode(0xff)),
        // DENY is never sent by a client.
        (vec![0x01], DecodeError::UnknownOpcode(0x01)),
        (vec![0x05, 0x01, 0x02], DecodeError::InvalidBool(2)),
        (
            vec![
                0x03, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
            ],
            DecodeError::VarintTooLong,
        ),
        (
            vec![
                0x03, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ],
            DecodeError::VarintOverflow,
        ),
        // A 2^40-byte message announced in a BROADCAST: rejected at the length.
        (
            {
                let mut v = vec![0x03, 0x01, b'c'];
                let mut b = BytesMut::new();
                put_varint(&mut b, 1 << 40);
                v.extend_from_slice(&b);
                v
            },
            DecodeError::TooLong {
                field: "message",
                len: 1 << 40,
                max: l.max_message_size,
            },
        ),
        // A 64 KiB + 1 chunk.
        (
            {
                let mut v = vec![0x0c, 0x01, 0x00];
                let mut b = BytesMut::new();
                put_varint(&mut b, 65537);
                v.extend_from_slice(&b);
                v
            },
            DecodeError::TooLong {
                field: "chunk",
                len: 65537,
                max: 65536,
            },
        ),
        (
            vec![0x06, 0x02, 0xc3, 0x28],
            DecodeError::InvalidUtf8("topic"),
        ),
    ];
    for (wire, want) in cases {
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(decode_client(&mut buf, &l), Err(want), "input {wire:02x?}");
        assert_eq!(buf.len(), wire.len(), "buffer untouched on error");
    }
    // Node-side direction: SUBSCRIBE never comes from the node.
    let mut buf = BytesMut::from(&[0x06, 0x00][..]);
    assert_eq!(
        decode_node(&mut buf, &l),
        Err(DecodeError::UnknownOpcode(0x06))
    );
}

fn name() -> impl Strategy<Value = Name> {
    "[a-z0-9 ]{0,12}".prop_map(Name::from)
}

fn payload() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn client_packet() -> impl Strategy<Value = ClientPacket> {
    prop_oneof![
        (payload(), payload(), name()).prop_map(|(magic, version, cluster)| ClientPacket::Init {
            magic,
            version,
            cluster
        }),
        Just(ClientPacket::Close),
        (name(), payload())
            .prop_map(|(cluster, message)| ClientPacket::Broadcast { cluster, message }),
        (any::<u64>(), name(), payload(), any::<u64>()).prop_map(
            |(id, cluster, request, timeout_ms)| {
                ClientPacket::Request {
                    id,
                    cluster,
                    request,
                    timeout_ms,
                }
            }
        ),
        (any::<u64>(), payload()).prop_map(|(id, r)| ClientPacket::Reply { id, outcome: Ok(r) }),
        (any::<u64>(), name()).prop_map(|(id, f)| ClientPacket::Reply {
            id,
            outcome: Err(f)
        }),
        name().prop_map(|topic| ClientPacket::Subscribe { topic }),
        name().prop_map(|topic| ClientPacket::Unsubscribe { topic }),
        (name(), payload()).prop_map(|(topic, event)| ClientPacket::Publish { topic, event }),
        (any::<u64>(), name(), any::<u64>()).prop_map(|(tun_id, cluster, timeout_ms)| {
            ClientPacket::TunInit {
                tun_id,
                cluster,
                timeout_ms,
            }
        }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(build_id, tun_id)| ClientPacket::TunConfirm { build_id, tun_id }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(tun_id, space)| ClientPacket::TunAllow { tun_id, space }),
        (any::<u64>(), any::<u64>(), payload()).prop_map(|(tun_id, size_or_cont, payload)| {
            ClientPacket::TunTransfer {
                tun_id,
                size_or_cont,
                payload,
            }
        }),
        any::<u64>().prop_map(|tun_id| ClientPacket::TunClose { tun_id }),
    ]
}

fn node_packet() -> impl Strategy<Value = NodePacket> {
    prop_oneof![
        (payload(), payload()).prop_map(|(magic, version)| NodePacket::Init { magic, version }),
        (payload(), name()).prop_map(|(magic, reason)| NodePacket::Deny { magic, reason }),
        name().prop_map(|reason| NodePacket::Close { reason }),
        payload().prop_map(|message| NodePacket::Broadcast { message }),
        (any::<u64>(), payload(), any::<u64>()).prop_map(|(id, request, timeout_ms)| {
            NodePacket::Request {
                id,
                request,
                timeout_ms,
            }
        }),
        any::<u64>().prop_map(|id| NodePacket::Reply {
            id,
            outcome: ReplyOutcome::TimedOut
        }),
        (any::<u64>(), payload()).prop_map(|(id, r)| NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Success(r)
        }),
        (any::<u64>(), name()).prop_map(|(id, f)| NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Fault(f)
        }),
        (name(), payload()).prop_map(|(topic, event)| NodePacket::Publish { topic, event }),
        (any::<u64>(), any::<u64>()).prop_map(|(build_id, chunk_limit)| NodePacket::TunInit {
            build_id,
            chunk_limit
        }),
        (any::<u64>(), proptest::option::of(any::<u64>())).prop_map(|(tun_id, chunk_limit)| {
            NodePacket::TunConfirm {
                tun_id,
                chunk_limit,
            }
        }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(tun_id, space)| NodePacket::TunAllow { tun_id, space }),
        (any::<u64>(), any::<u64>(), payload()).prop_map(|(tun_id, size_or_cont, payload)| {
            NodePacket::TunTransfer {
                tun_id,
                size_or_cont,
                payload,
            }
        }),
        (any::<u64>(), name()).prop_map(|(tun_id, reason)| NodePacket::TunClose { tun_id, reason }),
    ]
}

/// Encodes `packets`, feeds the bytes in pieces of the `cuts` sizes, and checks that the
/// decoder gives back exactly the packets.
fn split_round_trip<P: PartialEq + std::fmt::Debug>(
    packets: &[P],
    cuts: &[usize],
    encode: fn(&P, &mut BytesMut),
    decode: fn(&mut BytesMut, &Limits) -> Result<Option<P>, DecodeError>,
) -> Result<(), TestCaseError> {
    let mut wire = BytesMut::new();
    for p in packets {
        encode(p, &mut wire);
    }
    let wire = wire.freeze();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut pos = 0;
    let mut cut = cuts.iter().cycle();
    while pos < wire.len() {
        let n = (*cut.next().unwrap()).min(wire.len() - pos);
        buf.extend_from_slice(&wire[pos..pos + n]);
        pos += n;
        while let Some(p) = decode(&mut buf, &limits()).unwrap() {
            got.push(p);
        }
    }
    prop_assert!(buf.is_empty());
    prop_assert_eq!(&got[..], packets);
    Ok(())
}

proptest! {
    /// Any sequence of packets, delivered in arbitrary read sizes, decodes back to itself.
    #[test]
    fn client_stream_round_trips_across_any_split(
        packets in proptest::collection::vec(client_packet(), 1..20),
        cuts in proptest::collection::vec(1usize..64, 1..50),
    ) {
        split_round_trip(&packets, &cuts, ClientPacket::encode, decode_client)?;
    }

    /// Same for the node's direction.
    #[test]
    fn node_stream_round_trips_across_any_split(
        packets in proptest::collection::vec(node_packet(), 1..20),
        cuts in proptest::collection::vec(1usize..64, 1..50),
    ) {
        split_round_trip(&packets, &cuts, NodePacket::encode, decode_node)?;
    }

    /// Arbitrary bytes never panic, and consumed lengths add up.
    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        crate::fuzzing::decode_stream(&data);
        crate::fuzzing::round_trip(&data);
    }
}
