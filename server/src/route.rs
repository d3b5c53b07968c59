//! What a request asks for, from its path alone, parsed once per request: `routes` dispatches
//! on the [`Route`] and `metrics` counts the answer under its [`Route::label`]. The dashboard's
//! own paths are defined here too, so the page that links them, the router that serves them
//! and the label that counts them agree without importing one another. This module imports
//! nothing of the crate.

/// Where the page loads its script from.
pub const SCRIPT_PATH: &str = "/dashboard.js";
/// Where the page loads its style sheet from.
pub const STYLE_PATH: &str = "/dashboard.css";
/// Where the page loads its icon from (browsers ask for `/favicon.ico` without one).
pub const ICON_PATH: &str = "/dashboard.svg";

/// A request's route. The method, the tokens and the channel name's rule are checked by the
/// handler; a path over the length limit is refused before any route is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/`, the dashboard.
    Dashboard,
    /// One of the dashboard's compiled-in files.
    Asset(Asset),
    /// `/metrics`.
    Metrics,
    /// `/v1/…`.
    Api(Api<'a>),
    /// Anything else: a file of the repository, by the kind its metrics are counted under.
    File(RepoFile),
}

/// The dashboard's script, style sheet and icon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    /// [`SCRIPT_PATH`].
    Script,
    /// [`STYLE_PATH`].
    Style,
    /// [`ICON_PATH`].
    Icon,
}

/// An API route (the path after `/v1/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api<'a> {
    /// `reports`.
    Reports,
    /// `channels`: every channel's status.
    Channels,
    /// `nodes`.
    Nodes,
    /// `pre-reboot` (FleetLock: take a reboot lease).
    PreReboot,
    /// `steady-state` (FleetLock: give it back).
    SteadyState,
    /// `leases`: the leases held and the lease log.
    Leases,
    /// `leases/GROUP/NODE/release`: an operator frees a lease (segments as sent).
    FreeLease {
        /// The group's path segment.
        group: &'a str,
        /// The node's path segment.
        node: &'a str,
    },
    /// `channels/NAME/ACTION`, the name as sent (still percent-encoded).
    Channel {
        /// The name's path segment.
        name: &'a str,
        /// What is asked of the channel.
        action: ChannelAction,
    },
    /// `tokens`: list (GET) or create (POST) named tokens.
    Tokens,
    /// `tokens/NAME/revoke` (the name's segment as sent).
    RevokeToken {
        /// The token's name.
        name: &'a str,
    },
    /// `audit`: the audit log.
    Audit,
    /// `enroll`: a node enrolls its key.
    Enroll,
    /// `enrollment-tokens`: an operator creates a one-time enrollment token.
    EnrollmentTokens,
    /// `enrollments`: the pending and enrolled node keys.
    Enrollments,
    /// `enrollments/NODE/approve` or `…/reject` (the node's segment as sent).
    DecideEnrollment {
        /// The node's path segment.
        node: &'a str,
        /// `true` for approve, `false` for reject.
        approve: bool,
    },
    /// `nodes/NODE/revoke`: an operator revokes a node's key.
    RevokeNode {
        /// The node's path segment.
        node: &'a str,
    },
    /// Any other API path.
    Unknown,
}

/// The last segment of `channels/NAME/ACTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelAction {
    /// `status`.
    Status,
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// Anything else (the name is still checked first).
    Unknown,
}

/// A repository file, by what agents fetch it for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoFile {
    /// `root.json` (and any other `.json` at the top).
    Root,
    /// `N.root.json`: agents ask for the root after the one they trust at every poll, so a
    /// 404 here is the normal "no newer root", not an error.
    RootProbe,
    /// `channels/…` (metadata polls, pause hints).
    Channel,
    /// `bundles/…`.
    Bundle,
    /// Anything else (refused or not found).
    Other,
}

impl<'a> Route<'a> {
    /// The route of a raw request path.
    pub fn of(raw: &'a str) -> Route<'a> {
        if let Some(api_path) = raw.strip_prefix("/v1/") {
            return Route::Api(Api::of(api_path));
        }
        match raw {
            "/" => Route::Dashboard,
            SCRIPT_PATH => Route::Asset(Asset::Script),
            STYLE_PATH => Route::Asset(Asset::Style),
            ICON_PATH => Route::Asset(Asset::Icon),
            "/metrics" => Route::Metrics,
            _ => Route::File(RepoFile::of(raw)),
        }
    }

    /// The label a request is counted under in the metrics: a fixed list, so every label
    /// value is bounded.
    pub fn label(self) -> &'static str {
        match self {
            Route::Dashboard | Route::Asset(_) => "page",
            Route::Metrics => "metrics",
            Route::Api(api) => api.label(),
            Route::File(file) => file.label(),
        }
    }
}

impl<'a> Api<'a> {
    fn of(api_path: &'a str) -> Api<'a> {
        match api_path.split('/').collect::<Vec<_>>().as_slice() {
            ["reports"] => Api::Reports,
            ["channels"] => Api::Channels,
            ["nodes"] => Api::Nodes,
            ["pre-reboot"] => Api::PreReboot,
            ["steady-state"] => Api::SteadyState,
            ["leases"] => Api::Leases,
            ["leases", group, node, "release"] => Api::FreeLease { group, node },
            ["tokens"] => Api::Tokens,
            ["tokens", name, "revoke"] => Api::RevokeToken { name },
            ["audit"] => Api::Audit,
            ["enroll"] => Api::Enroll,
            ["enrollment-tokens"] => Api::EnrollmentTokens,
            ["enrollments"] => Api::Enrollments,
            ["enrollments", node, "approve"] => Api::DecideEnrollment {
                node,
                approve: true,
            },
            ["enrollments", node, "reject"] => Api::DecideEnrollment {
                node,
                approve: false,
            },
            ["nodes", node, "revoke"] => Api::RevokeNode { node },
            ["channels", name, action] => Api::Channel {
                name,
                action: ChannelAction::of(action),
            },
            _ => Api::Unknown,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Api::Reports => "reports",
            Api::Channels | Api::Nodes | Api::Leases | Api::Audit | Api::Enrollments => "status",
            Api::PreReboot | Api::SteadyState => "lease",
            Api::Enroll => "enroll",
            Api::FreeLease { .. }
            | Api::Tokens
            | Api::RevokeToken { .. }
            | Api::EnrollmentTokens
            | Api::DecideEnrollment { .. }
            | Api::RevokeNode { .. } => "admin",
            Api::Channel { action, .. } => match action {
                ChannelAction::Status => "status",
                ChannelAction::Pause | ChannelAction::Resume => "admin",
                ChannelAction::Unknown => "other_api",
            },
            Api::Unknown => "other_api",
        }
    }
}

impl ChannelAction {
    fn of(segment: &str) -> ChannelAction {
        match segment {
            "status" => ChannelAction::Status,
            "pause" => ChannelAction::Pause,
            "resume" => ChannelAction::Resume,
            _ => ChannelAction::Unknown,
        }
    }
}

impl RepoFile {
    fn of(raw: &str) -> RepoFile {
        match raw {
            _ if raw.starts_with("/channels/") => RepoFile::Channel,
            _ if raw.starts_with("/bundles/") => RepoFile::Bundle,
            _ if is_versioned_root(raw) => RepoFile::RootProbe,
            _ if raw.ends_with(".json") && raw.rfind('/') == Some(0) => RepoFile::Root,
            _ => RepoFile::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            RepoFile::Root => "root",
            RepoFile::RootProbe => "root_probe",
            RepoFile::Channel => "channel",
            RepoFile::Bundle => "bundle",
            RepoFile::Other => "other",
        }
    }
}

/// Whether `raw` is `/N.root.json` (N decimal digits).
fn is_versioned_root(raw: &str) -> bool {
    raw.strip_prefix('/')
        .and_then(|p| p.strip_suffix(".root.json"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_a_fixed_list() {
        for (path, label) in [
            ("/", "page"),
            ("/dashboard.js", "page"),
            ("/metrics", "metrics"),
            ("/v1/channels", "status"),
            ("/v1/nodes", "status"),
            ("/v1/reports", "reports"),
            ("/v1/channels/stable/status", "status"),
            ("/v1/channels/stable/resume", "admin"),
            ("/v1/nothing", "other_api"),
            ("/v1/pre-reboot", "lease"),
            ("/v1/steady-state", "lease"),
            ("/v1/leases", "status"),
            ("/v1/leases/default/n1/release", "admin"),
            ("/v1/tokens", "admin"),
            ("/v1/tokens/alice/revoke", "admin"),
            ("/v1/audit", "status"),
            ("/v1/enroll", "enroll"),
            ("/v1/enrollments", "status"),
            ("/v1/enrollment-tokens", "admin"),
            ("/v1/enrollments/n1/approve", "admin"),
            ("/v1/enrollments/n1/reject", "admin"),
            ("/v1/enrollments/n1/other", "other_api"),
            ("/v1/nodes/n1/revoke", "admin"),
            ("/root.json", "root"),
            ("/3.root.json", "root_probe"),
            ("/.root.json", "root"),
            ("/3x.root.json", "root"),
            ("/channels/stable.json", "channel"),
            ("/bundles/os-2.tandem", "bundle"),
            ("/x/y.json", "other"),
            ("/favicon.ico", "other"),
        ] {
            assert_eq!(Route::of(path).label(), label, "{path}");
        }
    }

    #[test]
    fn a_path_is_parsed_into_what_the_router_dispatches_on() {
        for (path, route) in [
            ("/", Route::Dashboard),
            ("/dashboard.js", Route::Asset(Asset::Script)),
            ("/dashboard.css", Route::Asset(Asset::Style)),
            ("/dashboard.svg", Route::Asset(Asset::Icon)),
            ("/v1/channels", Route::Api(Api::Channels)),
            ("/v1/nodes", Route::Api(Api::Nodes)),
            ("/v1/reports", Route::Api(Api::Reports)),
            ("/v1/", Route::Api(Api::Unknown)),
            ("/v1/reports/x", Route::Api(Api::Unknown)),
            (
                "/v1/enrollments/n1/reject",
                Route::Api(Api::DecideEnrollment {
                    node: "n1",
                    approve: false,
                }),
            ),
            (
                "/v1/nodes/n%3A1/revoke",
                Route::Api(Api::RevokeNode { node: "n%3A1" }),
            ),
            ("/v1/pre-reboot", Route::Api(Api::PreReboot)),
            ("/v1/steady-state", Route::Api(Api::SteadyState)),
            ("/v1/leases", Route::Api(Api::Leases)),
            (
                "/v1/leases/g/n/release",
                Route::Api(Api::FreeLease {
                    group: "g",
                    node: "n",
                }),
            ),
            ("/v1/leases/g/n", Route::Api(Api::Unknown)),
            ("/v1/tokens", Route::Api(Api::Tokens)),
            (
                "/v1/tokens/alice/revoke",
                Route::Api(Api::RevokeToken { name: "alice" }),
            ),
            ("/v1/audit", Route::Api(Api::Audit)),
            ("/v1/channels/a/b/status", Route::Api(Api::Unknown)),
            ("/3.root.json", Route::File(RepoFile::RootProbe)),
            ("/v2/reports", Route::File(RepoFile::Other)),
        ] {
            assert_eq!(Route::of(path), route, "{path}");
        }
        let channel = |name, action| Route::Api(Api::Channel { name, action });
        for (path, route) in [
            (
                "/v1/channels/Edge%2Bfips/status",
                channel("Edge%2Bfips", ChannelAction::Status),
            ),
            (
                "/v1/channels/stable/pause",
                channel("stable", ChannelAction::Pause),
            ),
            (
                "/v1/channels/stable/resume",
                channel("stable", ChannelAction::Resume),
            ),
            ("/v1/channels//x", channel("", ChannelAction::Unknown)),
        ] {
            assert_eq!(Route::of(path), route, "{path}");
        }
    }
}
