//! The pub/sub payload: a routing [`Header`] and a serialized server frame, serialized once
//! by the publisher and shared by every connection that gets it.

use bytes::Bytes;
use parley_protocol::{Id, PresenceStatus};
use serde::{Deserialize, Serialize};

/// Routing information published with a frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Do not deliver to this user's connections (typing, read: "to the other members").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<Id>,
    /// (channel, user): the user joined the channel; their connections start receiving it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub j: Option<(Id, Id)>,
    /// (channel, user): the user left the channel; their connections stop receiving it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l: Option<(Id, Id)>,
    /// (user, status) of a presence event, so a connection gets each change once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<(Id, PresenceStatus)>,
    /// (channel, message id) of a message event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<(Id, Id)>,
}

/// `header JSON \n frame JSON`: the pub/sub payload.
pub fn encode(header: &Header, frame: &[u8]) -> Bytes {
    let mut out = serde_json::to_vec(header).expect("header serializes");
    out.push(b'\n');
    out.extend_from_slice(frame);
    Bytes::from(out)
}

/// Splits a payload into header and frame (the frame shares the payload's memory).
pub fn decode(payload: &Bytes) -> Option<(Header, Bytes)> {
    let nl = payload.iter().position(|&b| b == b'\n')?;
    let header = serde_json::from_slice(&payload[..nl]).ok()?;
    Some((header, payload.slice(nl + 1..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            x: Some(Id(1)),
            m: Some((Id(2), Id(3))),
            ..Default::default()
        };
        let payload = encode(&h, b"{\"t\":\"x\"}");
        let (back, f) = decode(&payload).unwrap();
        assert_eq!(back, h);
        assert_eq!(&f[..], b"{\"t\":\"x\"}");
    }
}
