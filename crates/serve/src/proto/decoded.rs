//! A whole byte stream run through a [`Decoder`], piece by piece as a socket would deliver it,
//! into a form two runs can be compared by ([`decode_chunks`]): the split-equivalence tests and
//! the `http_decoder` fuzz target check that how the bytes are split never changes the result.

use bytes::BytesMut;
use c10k_http::Version;

use super::decode::Decoder;
use super::limits::Limits;
#[cfg(test)]
use super::{decode::Incoming, limits::HttpError};

/// What decoding a byte stream produced, in a form two decodings can be compared by: each
/// request (method, target, version, headers, body) in order, then how decoding stopped. Used
/// by the split-equivalence tests and the fuzz target.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    pub requests: Vec<DecodedRequest>,
    /// `None`: more bytes were needed; `Some((status, reason))`: refused.
    pub refused: Option<(u16, String)>,
}

/// One decoded request, compared field by field.
#[derive(Debug, PartialEq, Eq)]
pub struct DecodedRequest {
    pub method: String,
    pub target: String,
    pub version: Version,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Decodes `chunks` as they would arrive from a socket, one after another.
pub fn decode_chunks<'a>(limits: &Limits, chunks: impl IntoIterator<Item = &'a [u8]>) -> Decoded {
    let mut d = Decoder::new(limits.clone());
    let mut buf = BytesMut::new();
    let mut out = Decoded {
        requests: Vec::new(),
        refused: None,
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(inc)) => {
                    let r = inc.request;
                    let body = r.body.to_bytes().map(|b| b.to_vec()).unwrap_or_default();
                    let headers = r.headers.iter().map(|(n, v)| (n.to_owned(), v.to_vec()));
                    out.requests.push(DecodedRequest {
                        method: r.method.as_str().to_owned(),
                        target: r.target,
                        version: r.version,
                        headers: headers.collect(),
                        body,
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    out.refused = Some((e.status, e.reason.into_owned()));
                    return out;
                }
            }
        }
    }
    out
}

/// Decodes `input` at once, for the unit tests: the requests, how decoding stopped and the bytes
/// left over.
#[cfg(test)]
pub(super) fn decode_all(input: &[u8]) -> (Vec<Incoming>, Result<(), HttpError>, BytesMut) {
    let mut d = Decoder::new(Limits::default());
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    loop {
        match d.decode(&mut buf) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => return (out, Ok(()), buf),
            Err(e) => return (out, Err(e), buf),
        }
    }
}
