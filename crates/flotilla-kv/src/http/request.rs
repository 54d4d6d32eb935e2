//! Strict parsing of what a client sends: keys, session headers, `consistency=`, bodies.
//! Every function answers a ready-made error response on failure, never panics.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use flotilla_node::ReadConsistency;
use futures_util::StreamExt;

use super::errors::json_error;
use crate::{ClientSeq, MAX_KEY_BYTES};

pub const CLIENT_HEADER: &str = "x-flotilla-client";
pub const SEQ_HEADER: &str = "x-flotilla-seq";

/// Why a key is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyError {
    /// 400: empty after decoding.
    Empty,
    /// 400: a bad `%` escape, or not UTF-8 once decoded.
    Malformed(&'static str),
    /// 414: over [`MAX_KEY_BYTES`] once decoded.
    TooLong(usize),
}

impl KeyError {
    pub fn response(&self) -> HttpResponse {
        match self {
            KeyError::Empty => json_error(StatusCode::BAD_REQUEST, "bad_key", "the key is empty"),
            KeyError::Malformed(why) => json_error(StatusCode::BAD_REQUEST, "bad_key", *why),
            KeyError::TooLong(n) => json_error(
                StatusCode::URI_TOO_LONG,
                "key_too_long",
                format!("the key is {n} bytes; at most {MAX_KEY_BYTES}"),
            ),
        }
    }
}

/// Percent-decodes one raw path segment into a key: every `%` must start a two-digit hex
/// escape; the result must be UTF-8 of 1..=1024 bytes. Other bytes are taken as they are.
pub fn decode_key(raw: &str) -> Result<String, KeyError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex =
                    bytes.get(i + 1..i + 3).ok_or(KeyError::Malformed("truncated %-escape"))?;
                let hi = hex_value(hex[0]).ok_or(KeyError::Malformed("bad %-escape"))?;
                let lo = hex_value(hex[1]).ok_or(KeyError::Malformed("bad %-escape"))?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'/' => return Err(KeyError::Malformed("a key is one path segment; encode / as %2F")),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if out.is_empty() {
        return Err(KeyError::Empty);
    }
    if out.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong(out.len()));
    }
    String::from_utf8(out).map_err(|_| KeyError::Malformed("the key is not UTF-8 once decoded"))
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes a key as one path segment (unreserved characters stay as they are).
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The raw (still percent-encoded) key segment of `/v1/kv/{key}` or `/v1/kv/{key}/cas`,
/// taken from the request URI itself: the router's decoded view is lossy for bytes that are
/// not UTF-8.
pub fn key_of(req: &HttpRequest, suffix: &str) -> Result<String, KeyError> {
    let path = req.uri().path();
    let raw = path
        .strip_prefix("/v1/kv/")
        .and_then(|rest| rest.strip_suffix(suffix))
        .ok_or(KeyError::Malformed("unexpected path"))?;
    decode_key(raw)
}

/// A strict u64: ASCII digits only, no sign, no spaces, no overflow.
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The session headers: both or neither, each a decimal u64.
pub fn session_of(req: &HttpRequest) -> Result<Option<ClientSeq>, HttpResponse> {
    let header = |name: &str| -> Result<Option<u64>, HttpResponse> {
        let mut values = req.headers().get_all(name);
        let Some(value) = values.next() else { return Ok(None) };
        let bad = || {
            json_error(
                StatusCode::BAD_REQUEST,
                "bad_session",
                format!("{name} must be one decimal u64"),
            )
        };
        if values.next().is_some() {
            return Err(bad());
        }
        let text = value.to_str().map_err(|_| bad())?;
        parse_u64(text).map(Some).ok_or_else(bad)
    };
    match (header(CLIENT_HEADER)?, header(SEQ_HEADER)?) {
        (None, None) => Ok(None),
        (Some(client), Some(seq)) => Ok(Some(ClientSeq { client, seq })),
        _ => Err(json_error(
            StatusCode::BAD_REQUEST,
            "bad_session",
            "X-Flotilla-Client and X-Flotilla-Seq go together",
        )),
    }
}

/// `consistency=linearizable|lease|stale` from the query string; linearizable by default.
pub fn consistency_of(req: &HttpRequest) -> Result<ReadConsistency, HttpResponse> {
    let mut found = ReadConsistency::Linearizable;
    for pair in req.query_string().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "consistency" {
            continue;
        }
        found = match value {
            "linearizable" => ReadConsistency::Linearizable,
            "lease" => ReadConsistency::Lease,
            "stale" => ReadConsistency::Stale,
            _ => {
                return Err(json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_consistency",
                    "consistency is linearizable, lease or stale",
                ));
            }
        };
    }
    Ok(found)
}

/// Reads a body of at most `limit` bytes. A `Content-Length` over the limit is refused
/// before reading anything; a chunked body is refused as soon as it passes the limit, so at
/// most `limit` bytes are ever buffered.
pub async fn body_of(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, HttpResponse> {
    let too_large = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is over {limit} bytes"),
        )
    };
    let mut capacity = 0;
    if let Some(value) = req.headers().get(actix_web::http::header::CONTENT_LENGTH) {
        let length = value.to_str().ok().and_then(parse_u64).ok_or_else(|| {
            json_error(StatusCode::BAD_REQUEST, "bad_request", "Content-Length is not a number")
        })?;
        if length > limit as u64 {
            return Err(too_large());
        }
        capacity = length as usize;
    }
    let mut body = BytesMut::with_capacity(capacity);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            json_error(StatusCode::BAD_REQUEST, "bad_body", format!("reading the body failed: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_key_cases() {
        let cases: &[(&str, Result<&str, KeyError>)] = &[
            ("abc", Ok("abc")),
            ("a%2Fb", Ok("a/b")),
            ("a%2fb", Ok("a/b")),
            ("%25", Ok("%")),
            ("sp%20ace+", Ok("sp ace+")),
            ("%C3%A9", Ok("é")),
            ("é", Ok("é")),
            ("", Err(KeyError::Empty)),
            ("%", Err(KeyError::Malformed("truncated %-escape"))),
            ("%4", Err(KeyError::Malformed("truncated %-escape"))),
            ("%zz", Err(KeyError::Malformed("bad %-escape"))),
            ("%FF", Err(KeyError::Malformed("the key is not UTF-8 once decoded"))),
            ("a/b", Err(KeyError::Malformed("a key is one path segment; encode / as %2F"))),
        ];
        for (i, (raw, want)) in cases.iter().enumerate() {
            let got = decode_key(raw);
            assert_eq!(got.as_deref(), want.as_ref().map(|s| *s), "#{i} {raw:?}");
        }
    }

    #[test]
    fn key_length_is_counted_after_decoding() {
        assert_eq!(decode_key(&"a".repeat(1024)).map(|k| k.len()), Ok(1024));
        assert_eq!(decode_key(&"%41".repeat(1024)).map(|k| k.len()), Ok(1024));
        assert_eq!(decode_key(&"a".repeat(1025)), Err(KeyError::TooLong(1025)));
        assert_eq!(decode_key(&"%41".repeat(1025)), Err(KeyError::TooLong(1025)));
    }

    #[test]
    fn encode_then_decode_is_identity() {
        for key in ["a/b c", "%", "é/ü?#&=", "plain-key_1.2~"] {
            assert_eq!(decode_key(&encode_key(key)).as_deref(), Ok(key));
        }
    }

    #[test]
    fn strict_u64() {
        assert_eq!(parse_u64("0"), Some(0));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "+1", "-1", " 1", "1 ", "18446744073709551616", "0x10", "1.0"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }
}
