use super::*;

#[test]
fn the_first_known_offered_subprotocol_wins() {
    // kube-rs offers v5 first: the kubelet's port-forward has no v5, so v4 is answered.
    assert_eq!(
        negotiate(&["v5.channel.k8s.io", "v4.channel.k8s.io"]),
        Some((V4_BINARY, Codec::Binary))
    );
    assert_eq!(
        negotiate(&["v4.base64.channel.k8s.io", "v4.channel.k8s.io"]),
        Some((V4_BASE64, Codec::Base64))
    );
    assert_eq!(negotiate(&[]), Some(("", Codec::Binary)));
    assert_eq!(negotiate(&["channel.k8s.io", "v5.channel.k8s.io"]), None);
}

#[test]
fn ports_are_decoded_like_the_api_server() {
    assert_eq!(
        parse_ports(Some("&ports=80%2C1234")).unwrap(),
        vec![80, 1234]
    );
    assert_eq!(
        parse_ports(Some("ports=80&ports=443&x=1")).unwrap(),
        vec![80, 443]
    );
    assert_eq!(parse_ports(None).unwrap(), Vec::<u16>::new());
    let e = parse_ports(Some("ports=http")).unwrap_err();
    assert_eq!(e.code, 400);
    assert_eq!(
        e.message,
        "cannot convert to []int32: strconv.ParseUint: parsing \"http\": invalid syntax"
    );
    let e = parse_ports(Some("ports=70000")).unwrap_err();
    assert!(
        e.message.ends_with("parsing \"70000\": value out of range"),
        "{}",
        e.message
    );
}

#[test]
fn the_kubelet_wants_at_least_one_port_above_zero() {
    assert_eq!(
        check_ports(&[]).unwrap_err(),
        "query parameter \"port\" is required"
    );
    assert_eq!(check_ports(&[80, 0]).unwrap_err(), "port \"0\" must be > 0");
    assert!(check_ports(&[80]).is_ok());
}

#[test]
fn binary_messages_carry_the_channel_byte_first() {
    let m = encode(Codec::Binary, 1, &80u16.to_le_bytes());
    assert_eq!(m, Message::Binary(Bytes::from_static(&[1, 80, 0])));
    assert_eq!(
        decode(
            Codec::Binary,
            Message::Binary(Bytes::from_static(b"\x02GET /"))
        ),
        Some((2, Bytes::from_static(b"GET /")))
    );
    assert_eq!(decode(Codec::Binary, Message::Binary(Bytes::new())), None);
    assert_eq!(decode(Codec::Binary, Message::Ping(Bytes::new())), None);
}

#[test]
fn base64_messages_carry_the_channel_as_a_digit() {
    // wsstream's own example: "foo\n" on channel 0 is "0Zm9vCg==".
    assert_eq!(
        encode(Codec::Base64, 0, b"foo\n"),
        Message::text("0Zm9vCg==")
    );
    assert_eq!(
        decode(Codec::Base64, Message::text("1Cg==")),
        Some((1, Bytes::from_static(b"\n")))
    );
    assert_eq!(decode(Codec::Base64, Message::text("0not base64!")), None);
}
