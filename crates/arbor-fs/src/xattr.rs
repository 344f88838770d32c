//! Extended attributes in every namespace (`user.`, `trusted.`, `security.`, and the
//! POSIX ACLs under `system.`), stored in `XATTR_ITEM`s keyed by the name's hash.

use crate::acl;
use crate::error::{FsError, Result};
use crate::fs::{Fs, Txn};
use crate::ino::Loc;
use crate::items::{
    Inode, S_ISGID, S_ISUID, S_IXGRP, decode_xattrs, encode_xattrs, key, name_hash, ty,
};
use arbor_engine::Engine;

/// The file capabilities that a write, a truncation or a chown removes.
const SECURITY_CAPABILITY: &[u8] = b"security.capability";

/// How `setxattr` treats an existing attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XattrFlags {
    /// Fail with EEXIST if it exists.
    pub create: bool,
    /// Fail with ENODATA if it does not.
    pub replace: bool,
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > 255 {
        return Err(FsError::Range);
    }
    let known = [&b"user."[..], b"trusted.", b"security."]
        .iter()
        .any(|p| name.starts_with(p) && name.len() > p.len())
        || name == acl::ACCESS
        || name == acl::DEFAULT;
    if !known {
        return Err(FsError::NotSupported("unknown xattr namespace"));
    }
    Ok(())
}

impl Fs {
    /// Sets an attribute.
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: XattrFlags) -> Result<()> {
        check_name(name)?;
        if name == acl::ACCESS || name == acl::DEFAULT {
            acl::validate(value)?;
        }
        let Loc { subvol, ino } = Loc::of(ino)?;
        self.change(subvol, |t| {
            t.e.reserve(t.tree, 3, 0)?;
            let mut inode = t.inode(ino)?;
            if name == acl::DEFAULT && !inode.is_dir() {
                return Err(FsError::Invalid("default ACL on a non-directory".into()));
            }
            let exists = t.get_xattr(ino, name)?.is_some();
            if flags.create && exists {
                return Err(FsError::Exists);
            }
            if flags.replace && !exists {
                return Err(FsError::NoAttr);
            }
            t.set_xattr_raw(ino, name, value)?;
            if name == acl::ACCESS {
                inode.mode = (inode.mode & !0o777) | acl::mode_of(value)?;
            }
            inode.ctime = t.now;
            t.put_inode(&inode)
        })
    }

    /// An attribute's value.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        if name.is_empty() || name.len() > 255 {
            return Err(FsError::Range);
        }
        let at = Loc::of(ino)?;
        self.with_engine(|e| Self::getxattr_in(e, at, name))
    }

    fn getxattr_in(e: &Engine, Loc { subvol, ino }: Loc, name: &[u8]) -> Result<Vec<u8>> {
        Self::get_inode(e, subvol, ino)?;
        let k = key(ino, ty::XATTR_ITEM, name_hash(name));
        let Some(v) = e.get(subvol, k)? else {
            return Err(FsError::NoAttr);
        };
        decode_xattrs(ino, k, &v)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or(FsError::NoAttr)
    }

    /// Every attribute name.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        let at = Loc::of(ino)?;
        self.with_engine(|e| Self::listxattr_in(e, at))
    }

    fn listxattr_in(e: &Engine, Loc { subvol, ino }: Loc) -> Result<Vec<Vec<u8>>> {
        Self::get_inode(e, subvol, ino)?;
        let lo = key(ino, ty::XATTR_ITEM, 0);
        let hi = key(ino, ty::XATTR_ITEM, u64::MAX);
        let mut names = Vec::new();
        for item in e.range(subvol, lo..=hi)? {
            let (k, v) = item?;
            names.extend(decode_xattrs(ino, k, &v)?.into_iter().map(|(n, _)| n));
        }
        Ok(names)
    }

    /// Removes an attribute.
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        check_name(name)?;
        let Loc { subvol, ino } = Loc::of(ino)?;
        self.change(subvol, |t| {
            t.e.reserve(t.tree, 3, 0)?;
            let mut inode = t.inode(ino)?;
            if !t.remove_xattr_raw(ino, name)? {
                return Err(FsError::NoAttr);
            }
            inode.ctime = t.now;
            t.put_inode(&inode)
        })
    }
}

impl Txn<'_> {
    pub(crate) fn get_xattr(&self, ino: u64, name: &[u8]) -> Result<Option<Vec<u8>>> {
        let k = key(ino, ty::XATTR_ITEM, name_hash(name));
        let Some(v) = self.e.get(self.tree, k)? else {
            return Ok(None);
        };
        Ok(decode_xattrs(ino, k, &v)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v))
    }

    pub(crate) fn set_xattr_raw(&mut self, ino: u64, name: &[u8], value: &[u8]) -> Result<()> {
        let k = key(ino, ty::XATTR_ITEM, name_hash(name));
        let mut list = match self.e.get(self.tree, k)? {
            Some(v) => decode_xattrs(ino, k, &v)?,
            None => Vec::new(),
        };
        list.retain(|(n, _)| n != name);
        list.push((name.to_vec(), value.to_vec()));
        let bytes = encode_xattrs(&list);
        if bytes.len() > self.e.max_value_size() {
            return Err(FsError::TooBig(value.len()));
        }
        self.e.insert(self.tree, k, &bytes)?;
        Ok(())
    }

    /// What Linux does to a file on a write, a truncation or a change of owner:
    /// `security.capability` goes, and with `kill_suid` set-user-ID goes too, and
    /// set-group-ID if the file is group-executable. The caller stores the inode.
    pub(crate) fn kill_privs(&mut self, inode: &mut Inode, kill_suid: bool) -> Result<()> {
        if inode.is_dir() {
            return Ok(());
        }
        let mut changed = self.remove_xattr_raw(inode.ino, SECURITY_CAPABILITY)?;
        if kill_suid && inode.mode & (S_ISUID | S_ISGID) != 0 {
            let before = inode.mode;
            inode.mode &= !S_ISUID;
            if inode.mode & S_IXGRP != 0 {
                inode.mode &= !S_ISGID;
            }
            changed |= inode.mode != before;
        }
        if changed {
            inode.ctime = self.now;
        }
        Ok(())
    }

    fn remove_xattr_raw(&mut self, ino: u64, name: &[u8]) -> Result<bool> {
        let k = key(ino, ty::XATTR_ITEM, name_hash(name));
        let Some(v) = self.e.get(self.tree, k)? else {
            return Ok(false);
        };
        let mut list = decode_xattrs(ino, k, &v)?;
        let before = list.len();
        list.retain(|(n, _)| n != name);
        if list.len() == before {
            return Ok(false);
        }
        if list.is_empty() {
            self.e.delete(self.tree, k)?;
        } else {
            self.e.insert(self.tree, k, &encode_xattrs(&list))?;
        }
        Ok(true)
    }
}
