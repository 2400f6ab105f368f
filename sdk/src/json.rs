//! JSON helpers for payloads: parse into typed structs, encode replies.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::HandlerError;

/// Parses JSON text into `T`; a mismatch is a `bad_request` naming the problem.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, HandlerError> {
    serde_json::from_str(text).map_err(|error| HandlerError::bad_request(error.to_string()))
}

/// Encodes a value as JSON text.
pub fn to_string<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}
