//! msgpack encode/decode with a size limit, for every untrusted frame.
//!
//! `decode` checks the length before it parses and maps every failure to a
//! [`ProtoError`]; it never panics, whatever the bytes.

use serde::{de::DeserializeOwned, Serialize};

/// Default largest frame a daemon accepts (16 MiB): large enough for a big
/// `cmd.run` output, small enough that a hostile peer cannot balloon memory.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("frame of {size} bytes is over the {max} byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("could not encode: {0}")]
    Encode(String),
}

/// Encode a value as msgpack with named fields (self-describing, so that
/// fields can be added later without breaking older peers).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ProtoError> {
    rmp_serde::to_vec_named(value).map_err(|e| ProtoError::Encode(e.to_string()))
}

/// Decode msgpack, refusing frames over `max` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, ProtoError> {
    if bytes.len() > max {
        return Err(ProtoError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    rmp_serde::from_slice(bytes).map_err(|e| ProtoError::Malformed(e.to_string()))
}

/// Encode a request-channel frame.
pub fn encode_wire(wire: crate::proto::Wire) -> Result<Vec<u8>, ProtoError> {
    encode(&crate::proto::Envelope {
        v: crate::proto::PROTO_VERSION,
        wire,
    })
}

/// Decode a request-channel frame and check its version.
pub fn decode_wire(bytes: &[u8], max: usize) -> Result<crate::proto::Wire, ProtoError> {
    let env: crate::proto::Envelope = decode(bytes, max)?;
    if env.v != crate::proto::PROTO_VERSION {
        return Err(ProtoError::Version(env.v));
    }
    Ok(env.wire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::*;

    #[test]
    fn wire_round_trip() {
        let w = Wire::Sealed {
            id: "web1".into(),
            data: vec![1, 2, 3],
        };
        let b = encode_wire(w.clone()).expect("encode");
        assert_eq!(decode_wire(&b, DEFAULT_MAX_FRAME).expect("decode"), w);
    }

    #[test]
    fn oversized_is_refused() {
        let b = vec![0u8; 100];
        assert!(matches!(
            decode::<Wire>(&b, 10),
            Err(ProtoError::TooLarge { size: 100, max: 10 })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..512 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode_wire(&bytes, DEFAULT_MAX_FRAME);
            let _ = decode::<SignedPub>(&bytes, DEFAULT_MAX_FRAME);
            let _ = decode::<JobLoad>(&bytes, DEFAULT_MAX_FRAME);
        }
    }

    #[test]
    fn wrong_version_is_refused() {
        let b = encode(&Envelope {
            v: 99,
            wire: Wire::ReAuth,
        })
        .expect("encode");
        assert!(matches!(
            decode_wire(&b, DEFAULT_MAX_FRAME),
            Err(ProtoError::Version(99))
        ));
    }

    #[test]
    fn job_load_with_json_values_round_trips() {
        let job = JobLoad {
            jid: "20261126120000000001".parse().expect("jid"),
            tgt: "*".into(),
            tgt_type: TargetType::Glob,
            fun: "cmd.run".into(),
            arg: vec![
                serde_json::json!("uptime"),
                serde_json::json!({"a": [1, 2.5, null]}),
            ],
            kwarg: [("cwd".to_string(), serde_json::json!("/tmp"))].into(),
            user: "root".into(),
            timeout: 5,
            delimiter: ":".into(),
            path: vec![],
            trace: None,
        };
        let b = encode(&job).expect("encode");
        let back: JobLoad = decode(&b, DEFAULT_MAX_FRAME).expect("decode");
        assert_eq!(back, job);
    }
}
