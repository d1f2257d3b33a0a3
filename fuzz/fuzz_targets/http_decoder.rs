//! The HTTP/1.x request decoder must turn any bytes, fed in any split, into the same requests
//! and the same refusal as when they arrive at once — never a panic. Bodies are spooled past a
//! tiny body buffer in one of the decodings, so the memory and file paths are compared too. The
//! first three bytes of the input choose the split points and the piece size; the rest is the
//! stream. Run: `cargo +nightly fuzz run http_decoder` (from the repository root).
#![no_main]

use c10k_serve::proto::{decode_chunks, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[a, b, piece], stream)) = data.split_first_chunk::<3>() else {
        return;
    };
    let limits = Limits {
        max_request_line: 512,
        max_head: 2048,
        max_headers: 16,
        max_body: 4096,
        body_buffer: 4096,
    };
    let whole = decode_chunks(&limits, [stream]);
    let n = stream.len();
    let (mut i, mut j) = (usize::from(a) % (n + 1), usize::from(b) % (n + 1));
    if i > j {
        std::mem::swap(&mut i, &mut j);
    }
    let split = decode_chunks(&limits, [&stream[..i], &stream[i..j], &stream[j..]]);
    assert_eq!(whole, split, "split at {i} and {j}");
    let spooled = Limits {
        body_buffer: 8,
        ..limits
    };
    let pieces = decode_chunks(&spooled, stream.chunks(usize::from(piece).max(1)));
    assert_eq!(whole, pieces, "pieces of {piece}, spooled past 8 bytes");
});
