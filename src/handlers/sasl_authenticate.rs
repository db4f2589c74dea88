//! SaslAuthenticate (key 36): one SASL token each way (KIP-152). On SASL listeners the
//! connection's read loop runs the exchange (`connection`, `sasl::Exchange`) and builds the
//! answer with `answer`.
//!
//! Runs on: the shard of the connection. Through `dispatch` (a listener without SASL, or
//! before a handshake) it answers ILLEGAL_SASL_STATE, as Kafka does.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::SaslAuthenticate,
    min_version: 0,
    max_version: 2,
};

/// The token the client sent.
pub fn token(req: &RequestFrame) -> Result<Bytes, ProtocolError> {
    let body: SaslAuthenticateRequest = req.decode()?;
    Ok(body.auth_bytes)
}

/// The answer: `Ok(token)` to send back, or the error code and message, with the session
/// lifetime (KIP-368: the client re-authenticates before it ends; 0 = never).
pub fn answer(
    shard: &Shard,
    req: &RequestFrame,
    result: Result<Vec<u8>, (i16, String)>,
    session_lifetime_ms: i64,
) -> Result<Bytes, ProtocolError> {
    let resp = match result {
        Ok(token) => SaslAuthenticateResponse::default()
            .with_error_code(error::NONE)
            .with_auth_bytes(Bytes::from(token))
            .with_session_lifetime_ms(session_lifetime_ms),
        Err((code, message)) => SaslAuthenticateResponse::default()
            .with_error_code(code)
            .with_error_message(Some(str_bytes(message))),
    };
    respond(shard, req, &resp)
}

/// SaslAuthenticate on a listener without SASL.
pub fn handle(shard: &Rc<Shard>, req: RequestFrame) -> Result<Reply, ProtocolError> {
    let _ = token(&req)?;
    let frame = answer(
        shard,
        &req,
        Err((
            error::ILLEGAL_SASL_STATE,
            "SaslAuthenticate on a listener without SASL".into(),
        )),
        0,
    )?;
    Ok(Reply::Frame(frame))
}
