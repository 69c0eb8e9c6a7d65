//! Who may do what through the socket.
//!
//! The kernel tells us the caller's uid, gid and pid (`SO_PEERCRED`, surfaced by
//! tonic as `UdsConnectInfo`); nothing the client sends is trusted for this. Roles:
//! - **admin** (everything): root, the daemon's own uid, `admin-uids`, members of
//!   `admin-groups`;
//! - **reader** (status, jobs, list, show, health, metrics, audit): `read-uids`,
//!   members of `read-groups`;
//! - anyone else: PERMISSION_DENIED naming the uid and the role needed.
//!
//! Group membership includes supplementary groups, looked up in the user database
//! (`getgrouplist`) for the caller's uid, since `SO_PEERCRED` carries only the
//! primary gid. Group names are resolved when the config is loaded or reloaded.

use std::collections::HashSet;

use tonic::Status;
use tonic::transport::server::UdsConnectInfo;

use crate::config::DaemonConfig;

/// What an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Reader,
    Admin,
}

impl Role {
    /// The role's name and the config keys that grant it.
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            Role::Reader => ("reader", "read-uids/read-groups"),
            Role::Admin => ("admin", "admin-uids/admin-groups"),
        }
    }
}

/// The caller of an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Peer {
    /// The caller as the audit log names it.
    pub fn actor(&self) -> String {
        match self.pid {
            Some(pid) => format!("uid={} pid={pid}", self.uid),
            None => format!("uid={}", self.uid),
        }
    }

    /// The peer of a request, from the socket's credentials.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Peer, Status> {
        Self::from_extensions(request.extensions())
    }

    /// The peer from request extensions (also used by the health interceptor).
    pub fn from_extensions(extensions: &tonic::Extensions) -> Result<Peer, Status> {
        let cred = extensions
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .ok_or_else(|| Status::permission_denied("the caller's credentials are unknown"))?;
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        })
    }
}

/// The access lists in force, with group names resolved to gids.
#[derive(Debug, Clone, Default)]
pub struct Access {
    own_uid: u32,
    admin_uids: HashSet<u32>,
    admin_gids: HashSet<u32>,
    read_uids: HashSet<u32>,
    read_gids: HashSet<u32>,
}

/// Resolves group names; unknown names are logged and ignored (a group may be
/// created after the daemon starts; reload picks it up).
fn gids(names: &[String]) -> HashSet<u32> {
    names
        .iter()
        .filter_map(|name| match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Some(group.gid.as_raw()),
            _ => {
                tracing::warn!(group = name, "group in the access lists does not exist; ignored");
                None
            }
        })
        .collect()
}

/// The groups `uid` belongs to: its primary `gid` plus supplementary groups.
fn groups_of(uid: u32, gid: u32) -> Vec<u32> {
    let mut groups = vec![gid];
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        && let Ok(name) = std::ffi::CString::new(user.name)
        && let Ok(list) = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
    {
        groups.extend(list.into_iter().map(|g| g.as_raw()));
    }
    groups
}

impl Access {
    pub fn new(config: &DaemonConfig) -> Access {
        Access {
            own_uid: nix::unistd::geteuid().as_raw(),
            admin_uids: config.admin_uids.iter().copied().collect(),
            admin_gids: gids(&config.admin_groups),
            read_uids: config.read_uids.iter().copied().collect(),
            read_gids: gids(&config.read_groups),
        }
    }

    /// The highest role of `peer`, if any.
    pub fn role(&self, peer: &Peer) -> Option<Role> {
        if peer.uid == 0 || peer.uid == self.own_uid || self.admin_uids.contains(&peer.uid) {
            return Some(Role::Admin);
        }
        let needs_groups = !self.admin_gids.is_empty() || !self.read_gids.is_empty();
        let groups = if needs_groups {
            groups_of(peer.uid, peer.gid)
        } else {
            Vec::new()
        };
        if groups.iter().any(|g| self.admin_gids.contains(g)) {
            return Some(Role::Admin);
        }
        if self.read_uids.contains(&peer.uid) || groups.iter().any(|g| self.read_gids.contains(g)) {
            return Some(Role::Reader);
        }
        None
    }

    /// Allows `peer` to do `what` if its role is at least `needed`.
    pub fn check(&self, peer: &Peer, needed: Role, what: &str) -> Result<(), Status> {
        match self.role(peer) {
            Some(role) if role >= needed => Ok(()),
            _ => {
                let (role, keys) = needed.describe();
                Err(Status::permission_denied(format!(
                    "uid {} may not {what}: that needs the {role} role ({keys})",
                    peer.uid
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access {
            own_uid: 999,
            admin_uids: [1000].into(),
            admin_gids: HashSet::new(),
            read_uids: [2000].into(),
            read_gids: HashSet::new(),
        }
    }

    fn peer(uid: u32) -> Peer {
        Peer {
            uid,
            gid: 65534,
            pid: Some(1),
        }
    }

    #[test]
    fn roles() {
        let a = access();
        let cases = [
            (0, Some(Role::Admin)),
            (999, Some(Role::Admin)),
            (1000, Some(Role::Admin)),
            (2000, Some(Role::Reader)),
            (3000, None),
        ];
        for (uid, want) in cases {
            assert_eq!(a.role(&peer(uid)), want, "uid {uid}");
        }
    }

    #[test]
    fn denial_names_uid_and_role() {
        let a = access();
        assert!(a.check(&peer(2000), Role::Reader, "list backups").is_ok());
        let err = a.check(&peer(2000), Role::Admin, "delete backups").unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            err.message(),
            "uid 2000 may not delete backups: that needs the admin role (admin-uids/admin-groups)"
        );
        assert!(a.check(&peer(3000), Role::Reader, "list backups").is_err());
    }
}
