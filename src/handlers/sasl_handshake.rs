//! SaslHandshake (key 17): the client names a SASL mechanism. On SASL listeners the
//! connection's read loop answers it (`connection`, with `answer` here), since it decides
//! what the connection may send next; v0 switches the connection to Kafka's legacy raw
//! token framing, v1 to SaslAuthenticate requests (KIP-152).
//!
//! Runs on: the shard of the connection. Through `dispatch` (a listener without SASL) it
//! answers ILLEGAL_SASL_STATE, as Kafka does.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, SaslHandshakeRequest, SaslHandshakeResponse};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::SaslHandshake,
    min_version: 0,
    max_version: 1,
};

/// The answer to a handshake for `mechanism`: NONE when it is enabled, else
/// UNSUPPORTED_SASL_MECHANISM; both list the enabled mechanisms.
pub fn answer(
    shard: &Shard,
    req: &RequestFrame,
) -> Result<(Option<String>, bytes::Bytes), ProtocolError> {
    let body: SaslHandshakeRequest = req.decode()?;
    let enabled = &shard.config.sasl_mechanisms;
    let chosen = enabled
        .iter()
        .find(|m| m.as_str() == body.mechanism.as_str())
        .cloned();
    let resp = SaslHandshakeResponse::default()
        .with_error_code(if chosen.is_some() {
            error::NONE
        } else {
            error::UNSUPPORTED_SASL_MECHANISM
        })
        .with_mechanisms(enabled.iter().map(|m| str_bytes(m.clone())).collect());
    Ok((chosen, respond(shard, req, &resp)?))
}

/// A handshake on a listener without SASL.
pub fn handle(shard: &Rc<Shard>, req: RequestFrame) -> Result<Reply, ProtocolError> {
    let _: SaslHandshakeRequest = req.decode()?;
    let resp = SaslHandshakeResponse::default().with_error_code(error::ILLEGAL_SASL_STATE);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
