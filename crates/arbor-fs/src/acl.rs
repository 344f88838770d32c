//! POSIX ACLs, stored as the `system.posix_acl_access` and `system.posix_acl_default`
//! xattrs in the kernel's format (a version header, then `tag, perm, id` entries).
//! With FUSE's POSIX ACL support the kernel enforces them; this layer keeps them in
//! step with the mode (chmod, setting an access ACL) and makes new inodes inherit a
//! directory's default ACL.

use crate::error::{FsError, Result};
use crate::fs::Txn;
use crate::items::{Inode, S_IFDIR};

pub const ACCESS: &[u8] = b"system.posix_acl_access";
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// Parses and validates an ACL value.
fn decode(v: &[u8]) -> Result<Vec<Entry>> {
    let bad = |why: &str| FsError::Invalid(format!("malformed POSIX ACL: {why}"));
    let (head, rest) = v.split_at_checked(4).ok_or_else(|| bad("too short"))?;
    let version = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if version != VERSION {
        return Err(bad("unknown version"));
    }
    if rest.len() % 8 != 0 {
        return Err(bad("entries are not 8 bytes"));
    }
    let mut out = Vec::new();
    for c in rest.chunks_exact(8) {
        let e = Entry {
            tag: u16::from_le_bytes([c[0], c[1]]),
            perm: u16::from_le_bytes([c[2], c[3]]),
            id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        };
        if e.perm & !7 != 0 || ![USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER].contains(&e.tag) {
            return Err(bad("unknown tag or permission bits"));
        }
        out.push(e);
    }
    let count = |t| out.iter().filter(|e| e.tag == t).count();
    if count(USER_OBJ) != 1 || count(GROUP_OBJ) != 1 || count(OTHER) != 1 || count(MASK) > 1 {
        return Err(bad("needs exactly one owner, owning group and other entry"));
    }
    if (count(USER) > 0 || count(GROUP) > 0) && count(MASK) == 0 {
        return Err(bad("named entries need a mask"));
    }
    Ok(out)
}

fn encode(acl: &[Entry]) -> Vec<u8> {
    let mut v = VERSION.to_le_bytes().to_vec();
    for e in acl {
        v.extend_from_slice(&e.tag.to_le_bytes());
        v.extend_from_slice(&e.perm.to_le_bytes());
        v.extend_from_slice(&e.id.to_le_bytes());
    }
    v
}

/// Validates a value about to be stored under an ACL name.
pub(crate) fn validate(v: &[u8]) -> Result<()> {
    decode(v).map(|_| ())
}

/// The permission bits an access ACL implies: owner, mask (or owning group), other.
pub(crate) fn mode_of(v: &[u8]) -> Result<u32> {
    let acl = decode(v)?;
    let perm = |t| acl.iter().find(|e| e.tag == t).map(|e| u32::from(e.perm));
    let group = perm(MASK).or(perm(GROUP_OBJ)).unwrap_or(0);
    Ok(perm(USER_OBJ).unwrap_or(0) << 6 | group << 3 | perm(OTHER).unwrap_or(0))
}

/// Applies a default ACL to a new inode's mode (POSIX `create_masq`): returns the
/// access ACL to store, or None when the mode says everything.
fn create_masq(default: &[Entry], mode: &mut u32) -> Option<Vec<Entry>> {
    let mut acl = default.to_vec();
    let mut m = *mode & 0o777;
    let mut not_equiv = false;
    let (mut group_obj, mut mask) = (None, None);
    for (i, e) in acl.iter_mut().enumerate() {
        match e.tag {
            USER_OBJ => {
                e.perm &= ((m >> 6) & 7) as u16;
                m &= (u32::from(e.perm) << 6) | !0o700;
            }
            USER | GROUP => not_equiv = true,
            GROUP_OBJ => group_obj = Some(i),
            OTHER => {
                e.perm &= (m & 7) as u16;
                m &= u32::from(e.perm) | !0o007;
            }
            MASK => {
                mask = Some(i);
                not_equiv = true;
            }
            _ => {}
        }
    }
    if let Some(i) = mask.or(group_obj) {
        acl[i].perm &= ((m >> 3) & 7) as u16;
        m &= (u32::from(acl[i].perm) << 3) | !0o070;
    }
    *mode = (*mode & !0o777) | (m & 0o777);
    not_equiv.then_some(acl)
}

impl Txn<'_> {
    /// Gives a new inode its permissions: the directory's default ACL if it has one
    /// (directories inherit the default too), otherwise the mode less the umask.
    pub(crate) fn inherit_acl(&mut self, dir: &Inode, inode: &mut Inode, umask: u32) -> Result<()> {
        let Some(v) = self.get_xattr(dir.ino, DEFAULT)? else {
            inode.mode &= !(umask & 0o777);
            return Ok(());
        };
        let default = decode(&v)?;
        if let Some(access) = create_masq(&default, &mut inode.mode) {
            self.set_xattr_raw(inode.ino, ACCESS, &encode(&access))?;
        }
        if inode.mode & crate::items::S_IFMT == S_IFDIR {
            self.set_xattr_raw(inode.ino, DEFAULT, &v)?;
        }
        Ok(())
    }

    /// After a chmod, rewrites the access ACL's owner, mask (or group) and other
    /// entries to match the new mode.
    pub(crate) fn acl_chmod(&mut self, inode: &Inode) -> Result<()> {
        let Some(v) = self.get_xattr(inode.ino, ACCESS)? else {
            return Ok(());
        };
        let mut acl = decode(&v)?;
        let has_mask = acl.iter().any(|e| e.tag == MASK);
        for e in &mut acl {
            match e.tag {
                USER_OBJ => e.perm = ((inode.mode >> 6) & 7) as u16,
                MASK => e.perm = ((inode.mode >> 3) & 7) as u16,
                GROUP_OBJ if !has_mask => e.perm = ((inode.mode >> 3) & 7) as u16,
                OTHER => e.perm = (inode.mode & 7) as u16,
                _ => {}
            }
        }
        self.set_xattr_raw(inode.ino, ACCESS, &encode(&acl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(tag: u16, perm: u16, id: u32) -> Entry {
        Entry { tag, perm, id }
    }

    #[test]
    fn a_default_acl_with_a_named_user_masks_the_new_mode() {
        let default = vec![
            e(USER_OBJ, 7, 0),
            e(USER, 5, 1000),
            e(GROUP_OBJ, 5, 0),
            e(MASK, 7, 0),
            e(OTHER, 0, 0),
        ];
        let mut mode = 0o100_666;
        let acl = create_masq(&default, &mut mode).expect("named entries are not equivalent");
        assert_eq!(mode & 0o777, 0o660);
        assert_eq!(acl[3].perm, 6);
        assert_eq!(mode_of(&encode(&acl)).unwrap(), 0o660);
    }

    #[test]
    fn malformed_acls_are_rejected() {
        assert!(decode(&[2, 0, 0]).is_err());
        assert!(decode(&encode(&[e(USER_OBJ, 7, 0)])).is_err());
        assert!(
            decode(&encode(&[
                e(USER_OBJ, 7, 0),
                e(GROUP_OBJ, 7, 0),
                e(OTHER, 9, 0)
            ]))
            .is_err()
        );
        let ok = [e(USER_OBJ, 7, 0), e(GROUP_OBJ, 5, 0), e(OTHER, 0, 0)];
        assert_eq!(mode_of(&encode(&ok)).unwrap(), 0o750);
    }
}
