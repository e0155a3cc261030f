//! Tally's gRPC protocol, package `tally.v1`, and the code tonic generates for it.
//!
//! - `Licensing`: sessions, heartbeats, checkout and checkin, for applications.
//! - `Admin`: status, listings, removal, licenses, membership, history, for `tallyctl`.
//! - `Raft`: the internal node-to-node service, kept on its own service so client load
//!   never shares a channel or a limit with consensus traffic.
//!
//! A node that is not the leader answers a write with `UNAVAILABLE` and the leader's
//! address in the [`LEADER_ADDR_METADATA`] header; clients follow it with bounded retries.

/// Generated code. The generator's output is not ours to restyle.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    missing_debug_implementations
)]
pub mod v1 {
    tonic::include_proto!("tally.v1");
}

/// The encoded `FileDescriptorSet` of every service here, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tally_descriptor.bin"));

/// Metadata key carrying the leader's client address on a not-leader answer.
pub const LEADER_ADDR_METADATA: &str = "x-tally-leader-addr";

/// Metadata key carrying the leader's node id on a not-leader answer.
pub const LEADER_ID_METADATA: &str = "x-tally-leader-id";

/// Metadata key carrying the sender's cluster name on every `Raft` call; a node refuses
/// calls from any other cluster.
pub const CLUSTER_METADATA: &str = "x-tally-cluster";

/// Metadata key carrying the sending node's id on every `Raft` call; a node refuses
/// calls that claim to come from itself (a peer address that loops back).
pub const SENDER_METADATA: &str = "x-tally-from";

#[cfg(test)]
mod tests {
    use super::v1;
    use prost::Message;

    #[test]
    fn messages_round_trip() {
        let req = v1::CheckoutRequest {
            request: Some(v1::RequestId {
                client_id: vec![7; 16],
                seq: 42,
            }),
            auth: Some(v1::SessionAuth {
                session_id: 9,
                secret: vec![1; 32],
            }),
            feature: "solid_modeler".into(),
            version: "2026.1".into(),
            count: 2,
            wait: true,
            wait_timeout_ms: 5_000,
        };
        let bytes = req.encode_to_vec();
        assert_eq!(v1::CheckoutRequest::decode(bytes.as_slice()).unwrap(), req);

        let resp = v1::CheckoutResponse {
            result: Some(v1::checkout_response::Result::Denied(v1::Denial {
                reason: v1::DenialReason::NoSeats as i32,
                message: "all 25 seats of solid_modeler are in use".into(),
                in_use: 25,
                available: 25,
            })),
        };
        let bytes = resp.encode_to_vec();
        assert_eq!(
            v1::CheckoutResponse::decode(bytes.as_slice()).unwrap(),
            resp
        );
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(v1::CheckoutRequest::decode(&[0xff, 0xff, 0xff, 0x0f, 0x01][..]).is_err());
    }

    // The services the server and clients are built on exist with the expected shapes.
    #[allow(
        dead_code,
        reason = "compiled, never run: it checks the generated types exist"
    )]
    fn generated_services_exist(ch: tonic::transport::Channel) {
        let _ = v1::licensing_client::LicensingClient::new(ch.clone());
        let _ = v1::admin_client::AdminClient::new(ch.clone());
        let _ = v1::raft_client::RaftClient::new(ch);
    }
}
