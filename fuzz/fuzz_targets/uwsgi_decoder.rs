//! The uwsgi decoder must turn any bytes, fed in any split, into the same requests and the same
//! refusal as when they arrive at once — never a panic, never a request the one-shot decode did
//! not give. The first two bytes of the input choose the split points; the rest is the stream.
//! Run: `cargo +nightly fuzz run uwsgi_decoder` (from the repository root).
#![no_main]

use bytes::BytesMut;
use c10k_serve::uwsgi::{ConnInfo, Decoder, UwsgiError, UwsgiLimits};
use libfuzzer_sys::fuzz_target;

/// Every request decoded (as comparable text) and the error that ended decoding, if any.
fn decode(pieces: &[&[u8]]) -> (Vec<String>, Option<UwsgiError>) {
    let conn = ConnInfo {
        transport: c10k_http::Transport::Tcp,
        peer: Some(([127, 0, 0, 1], 1).into()),
        local: Some(([127, 0, 0, 1], 2).into()),
    };
    let limits = UwsgiLimits {
        max_vars: 16,
        max_body: 4096,
        ..UwsgiLimits::default()
    };
    let mut d = Decoder::new(limits, conn);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(r)) => {
                    assert!(r.path.starts_with('/'), "{}", r.path);
                    let body = r.body.to_bytes().expect("memory body");
                    out.push(format!("{r:?} {body:?}"));
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&[a, b], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let whole = decode(&[stream]);
    let n = stream.len();
    let (mut i, mut j) = (usize::from(a) % (n + 1), usize::from(b) % (n + 1));
    if i > j {
        std::mem::swap(&mut i, &mut j);
    }
    let split = decode(&[&stream[..i], &stream[i..j], &stream[j..]]);
    assert_eq!(whole, split);
});
