//! The two etcd v3 RPCs the probe needs (Maintenance.Status, KV.Range), spoken over an
//! already established TLS connection.
//!
//! The messages are declared here with prost's derive from etcd's `rpc.proto` and `kv.proto`
//! (field numbers as in etcd 3.4/3.5), instead of depending on a client crate that compiles
//! the whole API with protoc at build time: cmesh needs read-only access to two calls, and
//! control over the connection so that each stage is timed and diagnosed on its own.

use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

/// `etcdserverpb.ResponseHeader`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResponseHeader {
    /// The etcd cluster's ID.
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    /// The member that answered.
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    /// Store revision.
    #[prost(int64, tag = "3")]
    pub revision: i64,
    /// Raft term.
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// `etcdserverpb.StatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StatusRequest {}

/// `etcdserverpb.StatusResponse` (the fields cmesh reads).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StatusResponse {
    /// Header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// Server version.
    #[prost(string, tag = "2")]
    pub version: String,
    /// Database size.
    #[prost(int64, tag = "3")]
    pub db_size: i64,
    /// Leader member ID.
    #[prost(uint64, tag = "4")]
    pub leader: u64,
}

/// `etcdserverpb.RangeRequest` (the fields cmesh sets).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RangeRequest {
    /// First key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// End of the range (exclusive); the prefix's successor for a prefix read.
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// Maximum number of keys.
    #[prost(int64, tag = "3")]
    pub limit: i64,
}

/// `mvccpb.KeyValue` (the fields cmesh reads).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct KeyValue {
    /// Key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// Value.
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RangeResponse {
    /// Header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The keys found.
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    /// More keys beyond `limit`.
    #[prost(bool, tag = "3")]
    pub more: bool,
}

/// `Maintenance.Status`.
///
/// # Errors
/// The gRPC status.
pub(crate) async fn status(channel: Channel) -> Result<StatusResponse, tonic::Status> {
    let mut grpc = Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::from_static("/etcdserverpb.Maintenance/Status");
    let codec: ProstCodec<StatusRequest, StatusResponse> = ProstCodec::default();
    Ok(grpc
        .unary(tonic::Request::new(StatusRequest {}), path, codec)
        .await?
        .into_inner())
}

/// `KV.Range` over every key starting with `prefix`, at most `limit` keys.
///
/// # Errors
/// The gRPC status.
pub(crate) async fn range_prefix(
    channel: Channel,
    prefix: &str,
    limit: i64,
) -> Result<RangeResponse, tonic::Status> {
    range(
        channel,
        prefix.as_bytes(),
        prefix_end(prefix.as_bytes()),
        limit,
    )
    .await
}

/// One key: what Cilium's `remote` etcd role may read of `cilium/cluster-config/` (only the
/// serving cluster's own key, not the prefix).
///
/// # Errors
/// The gRPC status.
pub(crate) async fn get(channel: Channel, key: &str) -> Result<RangeResponse, tonic::Status> {
    range(channel, key.as_bytes(), Vec::new(), 1).await
}

async fn range(
    channel: Channel,
    key: &[u8],
    range_end: Vec<u8>,
    limit: i64,
) -> Result<RangeResponse, tonic::Status> {
    let mut grpc = Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::from_static("/etcdserverpb.KV/Range");
    let codec: ProstCodec<RangeRequest, RangeResponse> = ProstCodec::default();
    let req = RangeRequest {
        key: key.to_vec(),
        range_end,
        limit,
    };
    Ok(grpc
        .unary(tonic::Request::new(req), path, codec)
        .await?
        .into_inner())
}

/// The smallest key after every key with this prefix (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefix_end() {
        assert_eq!(super::prefix_end(b"cilium/"), b"cilium0".to_vec());
        assert_eq!(super::prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(super::prefix_end(b"\xff"), vec![0]);
    }
}
