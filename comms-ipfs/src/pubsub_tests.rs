//! The `pubsub/sub` decoder against what daemons send and what a hostile peer could make them send.

use proptest::prelude::*;

use super::*;

fn topic() -> Topic {
    Topic::new("blocks").expect("topic")
}

/// A kubo-style line with `seqno` as given.
fn line(data: &[u8], seqno: &str) -> Vec<u8> {
    format!(
        r#"{{"from":"12D3KooWpeer","data":"{}","seqno":{seqno},"topicIDs":["{}"]}}"#,
        multibase::encode(multibase::Base::Base64Url, data),
        multibase::encode(multibase::Base::Base64Url, "blocks"),
    )
    .into_bytes()
}

fn message(data: &[u8]) -> Decoded {
    Decoded::Message {
        from: PeerId::new("12D3KooWpeer"),
        data: Bytes::copy_from_slice(data),
    }
}

#[test]
fn any_seqno_is_ignored() {
    // The crate's decoder panics on the first: a one-byte sequence number.
    for seqno in [
        r#""uAQ""#,
        r#""uAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA""#,
        r#""%%garbage""#,
        "17",
        "null",
        "[]",
    ] {
        assert_eq!(
            decode_line(&line(b"hi", seqno), &topic(), 100),
            Ok(message(b"hi")),
            "{seqno}"
        );
    }
    let no_seqno = br#"{"from":"12D3KooWpeer","data":"uaGk"}"#;
    assert_eq!(decode_line(no_seqno, &topic(), 100), Ok(message(b"hi")));
}

#[test]
fn lines_without_messages_are_nothing() {
    assert_eq!(decode_line(b"{}", &topic(), 100), Ok(Decoded::Nothing));
    assert_eq!(
        decode_line(br#"{"from":"x"}"#, &topic(), 100),
        Ok(Decoded::Nothing)
    );
}

#[test]
fn malformed_lines_are_refused_with_a_reason() {
    let cases: [(&[u8], Dropped); 5] = [
        (b"not json", Dropped::Json(String::new())),
        (b"[1,2]", Dropped::Json(String::new())),
        (br#"{"data":"uaGk"}"#, Dropped::Field("from")),
        (br#"{"from":"p","data":"!!"}"#, Dropped::Field("data")),
        (
            br#"{"from":"p","data":"uaGk","topicIDs":["dGhlcnM"]}"#,
            Dropped::OtherTopic,
        ),
    ];
    for (input, expected) in cases {
        let outcome = decode_line(input, &topic(), 100);
        match (&outcome, &expected) {
            (Err(Dropped::Json(_)), Dropped::Json(_)) => {}
            _ => assert_eq!(outcome, Err(expected), "{}", String::from_utf8_lossy(input)),
        }
    }
}

#[test]
fn oversized_messages_are_refused() {
    assert_eq!(
        decode_line(&line(&[7; 100], "null"), &topic(), 100),
        Ok(message(&[7; 100]))
    );
    assert!(matches!(
        decode_line(&line(&[7; 101], "null"), &topic(), 100),
        Err(Dropped::TooLarge { limit: 100, .. })
    ));
    assert!(matches!(
        decode_line(&line(&[7; 10_000], "null"), &topic(), 100),
        Err(Dropped::TooLarge { .. })
    ));
}

#[test]
fn an_overlong_line_is_skipped_whole_and_the_next_one_read() {
    let mut lines = Lines::new(10);
    lines.push(b"{}\n0123456789abc");
    assert_eq!(
        lines.next_piece(),
        Some(Piece::Line(Bytes::from_static(b"{}")))
    );
    assert_eq!(lines.next_piece(), Some(Piece::Overlong));
    lines.push(b"defgh");
    assert_eq!(lines.next_piece(), None, "still inside the overlong line");
    lines.push(b"ij\n{}\n");
    assert_eq!(
        lines.next_piece(),
        Some(Piece::Line(Bytes::from_static(b"{}")))
    );
    assert_eq!(lines.next_piece(), None);
}

proptest! {
    /// Lines come out the same however the stream is cut into chunks.
    #[test]
    fn chunking_does_not_change_the_lines(
        lines in proptest::collection::vec("[a-z{}\":]{1,20}", 0..20),
        cuts in proptest::collection::vec(0usize..400, 0..10),
    ) {
        let stream: Vec<u8> = lines.iter().flat_map(|line| format!("{line}\n").into_bytes()).collect();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut.min(stream.len())).collect();
        cuts.extend([0, stream.len()]);
        cuts.sort_unstable();
        let mut splitter = Lines::new(64);
        let mut seen = Vec::new();
        for window in cuts.windows(2) {
            splitter.push(&stream[window[0]..window[1]]);
            while let Some(piece) = splitter.next_piece() {
                seen.push(piece);
            }
        }
        let expected: Vec<Piece> = lines.iter().map(|line| Piece::Line(Bytes::from(line.clone()))).collect();
        prop_assert_eq!(seen, expected);
    }

    /// No input makes the decoder panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_line(&bytes, &topic(), 64);
        let mut lines = Lines::new(32);
        lines.push(&bytes);
        while lines.next_piece().is_some() {}
    }

    /// Nor does any JSON object with fields of the names the decoder reads.
    #[test]
    fn arbitrary_field_values_never_panic(
        from in ".{0,20}", data in ".{0,40}", seqno in ".{0,20}", topic_id in ".{0,20}",
    ) {
        let line = serde_json::json!({"from": from, "data": data, "seqno": seqno, "topicIDs": [topic_id]});
        let _ = decode_line(line.to_string().as_bytes(), &topic(), 64);
    }
}
