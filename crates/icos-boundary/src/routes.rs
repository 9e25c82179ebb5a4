//! The routes the router serves and the request types they carry.

/// `GET`: the router's own status document.
pub const PATH_STATUS: &str = "/api/v2/status";
/// `GET`: 204 when healthy, 503 otherwise.
pub const PATH_HEALTH: &str = "/health";

/// The type of an IC API request, named as in ic-boundary's metrics and
/// `x-ic-request-type` header (snake_case, with the API version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestType {
    /// `GET /api/v2/status`.
    Status,
    /// `POST /api/v2/canister/<id>/query`.
    QueryV2,
    /// `POST /api/v3/canister/<id>/query`.
    QueryV3,
    /// `POST /api/v2/canister/<id>/call` (asynchronous).
    CallV2,
    /// `POST /api/v3/canister/<id>/call` (synchronous).
    CallV3,
    /// `POST /api/v4/canister/<id>/call` (synchronous).
    CallV4,
    /// `POST /api/v2/canister/<id>/read_state`.
    ReadStateV2,
    /// `POST /api/v3/canister/<id>/read_state`.
    ReadStateV3,
    /// `POST /api/v2/subnet/<id>/read_state`.
    ReadStateSubnetV2,
    /// `POST /api/v3/subnet/<id>/read_state`.
    ReadStateSubnetV3,
    /// `POST /api/v3/subnet/<id>/query`.
    QuerySubnetV3,
    /// `POST /api/v4/subnet/<id>/call`.
    CallSubnetV4,
}

/// Whether a route's id names a canister or a subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `/canister/<id>/…`.
    Canister,
    /// `/subnet/<id>/…`.
    Subnet,
}

impl RequestType {
    /// Every proxied request type with its route pattern (axum syntax).
    pub const PROXIED: [(RequestType, &'static str); 11] = [
        (Self::QueryV2, "/api/v2/canister/{id}/query"),
        (Self::QueryV3, "/api/v3/canister/{id}/query"),
        (Self::CallV2, "/api/v2/canister/{id}/call"),
        (Self::CallV3, "/api/v3/canister/{id}/call"),
        (Self::CallV4, "/api/v4/canister/{id}/call"),
        (Self::ReadStateV2, "/api/v2/canister/{id}/read_state"),
        (Self::ReadStateV3, "/api/v3/canister/{id}/read_state"),
        (Self::ReadStateSubnetV2, "/api/v2/subnet/{id}/read_state"),
        (Self::ReadStateSubnetV3, "/api/v3/subnet/{id}/read_state"),
        (Self::QuerySubnetV3, "/api/v3/subnet/{id}/query"),
        (Self::CallSubnetV4, "/api/v4/subnet/{id}/call"),
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::QueryV2 => "query_v2",
            Self::QueryV3 => "query_v3",
            Self::CallV2 => "call_v2",
            Self::CallV3 => "call_v3",
            Self::CallV4 => "call_v4",
            Self::ReadStateV2 => "read_state_v2",
            Self::ReadStateV3 => "read_state_v3",
            Self::ReadStateSubnetV2 => "read_state_subnet_v2",
            Self::ReadStateSubnetV3 => "read_state_subnet_v3",
            Self::QuerySubnetV3 => "query_subnet_v3",
            Self::CallSubnetV4 => "call_subnet_v4",
        }
    }

    /// An update call (rate-limited, not retried by default, routed by
    /// latency).
    pub fn is_call(self) -> bool {
        matches!(
            self,
            Self::CallV2 | Self::CallV3 | Self::CallV4 | Self::CallSubnetV4
        )
    }

    /// A canister query (the only cacheable type).
    pub fn is_query(self) -> bool {
        matches!(self, Self::QueryV2 | Self::QueryV3)
    }

    /// What the id in the path names, for proxied types.
    pub fn target(self) -> Target {
        match self {
            Self::ReadStateSubnetV2
            | Self::ReadStateSubnetV3
            | Self::QuerySubnetV3
            | Self::CallSubnetV4 => Target::Subnet,
            _ => Target::Canister,
        }
    }
}

/// The id segment of a proxied path (`/api/vN/<kind>/<id>/<method>`).
pub fn path_id(path: &str) -> Option<&str> {
    path.split('/').nth(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_table_is_consistent() {
        for (t, pattern) in RequestType::PROXIED {
            let subnet = pattern.contains("/subnet/");
            assert_eq!(t.target() == Target::Subnet, subnet, "{pattern}");
            let name = t.as_str();
            assert!(
                pattern.contains(&name[name.len() - 2..]),
                "{pattern} {name}"
            );
            assert_eq!(t.is_call(), pattern.ends_with("/call"));
            assert_eq!(
                path_id(&pattern.replace("{id}", "aaaaa-aa")),
                Some("aaaaa-aa")
            );
        }
        assert!(RequestType::QueryV3.is_query());
        assert!(!RequestType::QuerySubnetV3.is_query());
    }
}
