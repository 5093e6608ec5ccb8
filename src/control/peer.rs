//! Who is on the other end of a control connection, and what they may do.
//!
//! The uid comes from the kernel (SO_PEERCRED, via `UnixStream::peer_cred`), never from
//! anything the peer sends; its user and group names from the system's user database.

use nix::unistd::{Gid, Group, Uid, User};

use crate::config::PeerRule;
use crate::identity::{AuthMethod, Authenticator, Caller, Principal};

/// A local user, as the kernel and the user database name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUser {
    pub uid: u32,
    /// `None` when the uid has no entry in the user database.
    pub name: Option<String>,
    /// Primary and supplementary groups, by name (gids without a name are left out).
    pub groups: Vec<String>,
}

impl PeerUser {
    /// Looks `uid` up. A failed look-up leaves the name empty: such a peer is admitted
    /// only as the gateway's own uid (fail closed).
    pub fn lookup(uid: u32) -> Self {
        let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        let groups = user.as_ref().map(groups_of).unwrap_or_default();
        Self { uid, name: user.map(|u| u.name), groups }
    }

    /// Looks this process's own uid up and forgets it. The first look-up of a process reads
    /// nsswitch.conf and loads the user-database modules (`libnss_*`, by dlopen): a gateway
    /// does that while it starts, not on its first client's connection.
    pub fn warm_up() {
        let _ = Self::lookup(Uid::current().as_raw());
    }

    /// How the peer is named in messages and records: `alice (uid 1001)`.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} (uid {})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

fn groups_of(user: &User) -> Vec<String> {
    let gids = std::ffi::CString::new(user.name.as_str())
        .ok()
        .and_then(|name| nix::unistd::getgrouplist(&name, user.gid).ok())
        .unwrap_or_else(|| vec![user.gid]);
    let mut names: Vec<String> = gids.into_iter().filter_map(group_name).collect();
    names.sort();
    names.dedup();
    names
}

fn group_name(gid: Gid) -> Option<String> {
    Group::from_gid(gid).ok().flatten().map(|g| g.name)
}

/// What a peer may do on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The gateway's own uid: everything, and its MCP sessions are the stdio principal.
    Owner,
    /// In `[gateway] operators`: MCP sessions as `unix:<name>`, and operator commands.
    Operator,
    /// In `[gateway] socket_clients`: MCP sessions as `unix:<name>`, `status`.
    Client,
    /// Anyone else: refused at the hello.
    Refused,
}

impl Standing {
    /// True if operator requests are allowed.
    pub fn is_operator(self) -> bool {
        matches!(self, Self::Owner | Self::Operator)
    }
}

/// `[gateway] socket_clients` and `operators`, with the gateway's own uid.
#[derive(Debug, Clone)]
pub struct Admission {
    own_uid: u32,
    clients: Vec<PeerRule>,
    operators: Vec<PeerRule>,
}

impl Admission {
    /// The rules for a gateway running as `own_uid`.
    pub fn new(own_uid: u32, clients: Vec<PeerRule>, operators: Vec<PeerRule>) -> Self {
        Self { own_uid, clients, operators }
    }

    /// The rules for this process's uid.
    pub fn for_this_process(clients: Vec<PeerRule>, operators: Vec<PeerRule>) -> Self {
        Self::new(Uid::current().as_raw(), clients, operators)
    }

    /// The gateway's own uid.
    pub fn own_uid(&self) -> u32 {
        self.own_uid
    }

    /// True when someone besides the gateway's uid may connect (the socket is then 0660).
    pub fn admits_others(&self) -> bool {
        !self.clients.is_empty() || !self.operators.is_empty()
    }

    /// The group the socket file is given when others are admitted: the first
    /// `group:` rule of `socket_clients`, else of `operators`.
    pub fn socket_group(&self) -> Option<&str> {
        self.clients.iter().chain(&self.operators).find_map(|rule| match rule {
            PeerRule::Group(name) => Some(name.as_str()),
            PeerRule::User(_) => None,
        })
    }

    /// What `peer` may do. Root is no exception: it is admitted only by name.
    pub fn standing(&self, peer: &PeerUser) -> Standing {
        if peer.uid == self.own_uid {
            Standing::Owner
        } else if self.operators.iter().any(|rule| matches(rule, peer)) {
            Standing::Operator
        } else if self.clients.iter().any(|rule| matches(rule, peer)) {
            Standing::Client
        } else {
            Standing::Refused
        }
    }
}

fn matches(rule: &PeerRule, peer: &PeerUser) -> bool {
    match rule {
        PeerRule::User(name) => peer.name.as_deref() == Some(name.as_str()),
        PeerRule::Group(name) => peer.name.is_some() && peer.groups.iter().any(|g| g == name),
    }
}

/// Why an admitted peer has no caller.
#[derive(Debug, thiserror::Error)]
pub(super) enum CallerError {
    #[error("{0}")]
    Stdio(#[from] crate::identity::StdioPrincipalError),
    #[error("uid {0} has no name in the user database")]
    Unnamed(u32),
    #[error("principal unix:{name}: {source}")]
    Principal { name: String, source: crate::identity::PrincipalError },
}

/// The caller an `mcp` session of `peer` calls as: the stdio caller for the gateway's own
/// uid, else `unix:<name>` with the peer's Unix groups as `unix:<group>` (namespaced like
/// an OIDC issuer's unmapped groups, so a Unix group cannot pass for a token group).
pub(super) fn caller_for(peer: &PeerUser, standing: Standing, authenticator: &Authenticator) -> Result<Caller, CallerError> {
    if standing == Standing::Owner {
        return Ok(authenticator.stdio_caller()?);
    }
    let name = peer.name.as_deref().ok_or(CallerError::Unnamed(peer.uid))?;
    let principal = Principal::new(format!("unix:{name}"))
        .map_err(|source| CallerError::Principal { name: name.to_owned(), source })?;
    let groups = peer.groups.iter().map(|g| format!("unix:{g}")).collect();
    Ok(Caller::new(principal, groups, AuthMethod::UnixPeer))
}

#[cfg(test)]
mod tests {
    use super::{Admission, PeerUser, Standing};
    use crate::config::PeerRule;

    fn peer(uid: u32, name: &str, groups: &[&str]) -> PeerUser {
        PeerUser { uid, name: Some(name.into()), groups: groups.iter().map(|g| (*g).to_owned()).collect() }
    }

    #[test]
    fn only_the_own_uid_by_default_and_root_is_no_exception() {
        let admission = Admission::new(1000, Vec::new(), Vec::new());
        assert_eq!(admission.standing(&peer(1000, "svc", &[])), Standing::Owner);
        assert_eq!(admission.standing(&peer(0, "root", &["root"])), Standing::Refused);
        assert_eq!(admission.standing(&peer(1001, "alice", &["agents"])), Standing::Refused);
        assert!(!admission.admits_others());
    }

    #[test]
    fn users_and_groups_are_admitted_by_name_and_operators_apart() {
        let admission = Admission::new(
            1000,
            vec![PeerRule::Group("agents".into()), PeerRule::User("bob".into())],
            vec![PeerRule::User("carol".into())],
        );
        assert_eq!(admission.standing(&peer(1001, "alice", &["agents"])), Standing::Client);
        assert_eq!(admission.standing(&peer(1002, "bob", &[])), Standing::Client);
        assert_eq!(admission.standing(&peer(1003, "carol", &[])), Standing::Operator);
        assert_eq!(admission.standing(&peer(1004, "dave", &["staff"])), Standing::Refused);
        let unnamed = PeerUser { uid: 1005, name: None, groups: vec!["agents".into()] };
        assert_eq!(admission.standing(&unnamed), Standing::Refused);
        assert!(!Standing::Client.is_operator() && Standing::Operator.is_operator() && Standing::Owner.is_operator());
        assert_eq!(admission.socket_group(), Some("agents"));
    }

    #[test]
    fn the_socket_keys_parse_and_a_bad_entry_names_its_line() {
        use crate::config::{Config, IdleExit};
        let path = std::path::Path::new("conf/airlock.toml");
        let text = "[gateway]\nsocket_clients = [\"group:agents\", \"user:bob\"]\noperators = [\"user:carol\"]\nidle_exit = \"never\"\n";
        let config = Config::parse(text, path).expect("valid");
        assert_eq!(config.gateway.socket_clients, vec![PeerRule::Group("agents".into()), PeerRule::User("bob".into())]);
        assert_eq!(config.gateway.idle_exit, IdleExit::Never);
        let config = Config::parse("[gateway]\nidle_exit = \"30s\"\n", path).expect("valid");
        assert_eq!(config.gateway.idle_exit, IdleExit::After(std::time::Duration::from_secs(30)));
        let problems = Config::parse("[gateway]\nsocket_clients = [\"alice\"]\nidle_exit = \"soon\"\n", path).expect_err("invalid");
        let problems: Vec<String> = problems.problems().iter().map(ToString::to_string).collect();
        assert!(problems.iter().any(|p| p.starts_with("conf/airlock.toml:2: key \"gateway.socket_clients\"") && p.contains("user:<name>")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("conf/airlock.toml:3:") && p.contains("gateway.idle_exit")), "{problems:?}");
    }
}
