//! Who may talk to the helper: root, and members of one group (default `kwg`), judged by the
//! connection's SO_PEERCRED uid and that uid's groups in the user database (primary and
//! supplementary, `getgrouplist`), not by anything the client says.

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User};

/// The helper's group when `--group` is not given.
pub const DEFAULT_GROUP: &str = "kwg";

/// Who is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub group_name: String,
    /// `None` when the group does not exist: then only root is served.
    pub gid: Option<u32>,
}

impl Access {
    /// Looks `group` up in the group database.
    pub fn lookup(group: &str) -> Access {
        let gid = Group::from_name(group)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw());
        Access {
            group_name: group.to_string(),
            gid,
        }
    }
}

/// Whether `uid`, whose groups are `groups`, is served. `Err` is the sentence the client sees.
pub fn authorize(uid: u32, groups: &[u32], access: &Access) -> Result<(), String> {
    if uid == 0 || access.gid.is_some_and(|g| groups.contains(&g)) {
        return Ok(());
    }
    Err(match access.gid {
        Some(_) => format!(
            "uid {uid} is not in group {0}, whose members kwg-helper serves: sudo usermod -aG {0} $USER, then log in again",
            access.group_name
        ),
        None => format!(
            "kwg-helper serves root and group {0}, which does not exist: sudo groupadd {0} && sudo usermod -aG {0} $USER, then log in again",
            access.group_name
        ),
    })
}

/// The groups of `uid` in the user database (primary first); empty when the uid has no entry.
pub fn groups_of(uid: u32) -> Vec<u32> {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = CString::new(user.name.as_bytes()) else {
        return Vec::new();
    };
    let mut out = vec![user.gid.as_raw()];
    if let Ok(gs) = nix::unistd::getgrouplist(&name, user.gid) {
        out.extend(gs.into_iter().map(Gid::as_raw));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_group_members_only() {
        let access = Access {
            group_name: "kwg".into(),
            gid: Some(990),
        };
        assert_eq!(authorize(0, &[], &access), Ok(()));
        assert_eq!(authorize(1000, &[1000, 990], &access), Ok(()));
        let e = authorize(1001, &[1001, 27], &access).unwrap_err();
        assert_eq!(
            e,
            "uid 1001 is not in group kwg, whose members kwg-helper serves: sudo usermod -aG kwg $USER, then log in again"
        );
        let none = Access {
            group_name: "kwg".into(),
            gid: None,
        };
        assert!(
            authorize(1000, &[1000], &none)
                .unwrap_err()
                .contains("does not exist")
        );
    }

    #[test]
    fn groups_come_from_the_user_database() {
        // root's primary group is 0 on every Linux.
        assert_eq!(groups_of(0).first(), Some(&0));
        assert_eq!(groups_of(4_000_000_000), Vec::<u32>::new());
        let root = Access::lookup("root");
        assert_eq!(root.gid, Some(0));
        assert_eq!(Access::lookup("kwg-no-such-group-xyz").gid, None);
    }
}
