//! The subvolume tree (engine tree 6): one `ROOT_ITEM` per subvolume, the references
//! that place each subvolume in a directory of its parent, and an index by UUID.
//! `docs/format.md` ("Subvolumes") describes the same bytes.

use crate::error::Result;
use crate::items::{Reader, Time, key};
use arbor_engine::Key;

/// The engine tree that holds the items below.
pub const SUBVOL_TREE: u64 = 6;

/// Item types of the subvolume tree, numbered as in btrfs.
pub mod sty {
    pub const ROOT_ITEM: u8 = 132;
    pub const ROOT_BACKREF: u8 = 144;
    pub const ROOT_REF: u8 = 156;
    pub const UUID_SUBVOL: u8 = 251;
    pub const UUID_RECEIVED: u8 = 252;
    pub const FS_INFO: u8 = 250;
    pub const RECEIVE_PROGRESS: u8 = 170;
}

/// Objectid of the item that holds the next subvolume id.
pub const SUBVOL_INFO_OBJECTID: u64 = 7;

/// `ROOT_ITEM` flag: the subvolume refuses every change.
pub const SUBVOL_RDONLY: u64 = 1;

/// What the filesystem knows of one subvolume: `ROOT_ITEM` `(id, 132, 0)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubvolItem {
    pub flags: u64,
    pub uuid: [u8; 16],
    /// The UUID of the subvolume this one is a snapshot of (zero if none).
    pub parent_uuid: [u8; 16],
    /// The UUID of the subvolume a received stream re-created (zero if none).
    pub received_uuid: [u8; 16],
    /// The transaction that created the subvolume.
    pub otransid: u64,
    /// The transaction that sent it / received it (zero if never).
    pub stransid: u64,
    pub rtransid: u64,
    /// Creation, send and receive times.
    pub otime: Time,
    pub stime: Time,
    pub rtime: Time,
}

impl SubvolItem {
    pub const SIZE: usize = 8 + 3 * 16 + 3 * 8 + 3 * 12;

    pub fn read_only(&self) -> bool {
        self.flags & SUBVOL_RDONLY != 0
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::SIZE);
        v.extend_from_slice(&self.flags.to_le_bytes());
        v.extend_from_slice(&self.uuid);
        v.extend_from_slice(&self.parent_uuid);
        v.extend_from_slice(&self.received_uuid);
        for n in [self.otransid, self.stransid, self.rtransid] {
            v.extend_from_slice(&n.to_le_bytes());
        }
        for t in [self.otime, self.stime, self.rtime] {
            v.extend_from_slice(&t.sec.to_le_bytes());
            v.extend_from_slice(&t.nsec.to_le_bytes());
        }
        v
    }

    pub fn decode(id: u64, k: Key, v: &[u8]) -> Result<Self> {
        let mut r = Reader::new(v, id, k);
        let flags = r.u64()?;
        if flags & !SUBVOL_RDONLY != 0 {
            return Err(r.fail(format!("unknown subvolume flags {flags:#x}")));
        }
        let mut uuid = || -> Result<[u8; 16]> {
            let mut a = [0u8; 16];
            a.copy_from_slice(r.bytes(16)?);
            Ok(a)
        };
        let (uuid, parent_uuid, received_uuid) = (uuid()?, uuid()?, uuid()?);
        let (otransid, stransid, rtransid) = (r.u64()?, r.u64()?, r.u64()?);
        let mut time = || -> Result<Time> {
            let sec = r.i64()?;
            let nsec = r.u32()?;
            if nsec >= 1_000_000_000 {
                return Err(r.fail(format!("nanoseconds {nsec} out of range")));
            }
            Ok(Time { sec, nsec })
        };
        let (otime, stime, rtime) = (time()?, time()?, time()?);
        if !r.done() {
            return Err(r.fail("trailing bytes after the root item"));
        }
        Ok(Self {
            flags,
            uuid,
            parent_uuid,
            received_uuid,
            otransid,
            stransid,
            rtransid,
            otime,
            stime,
            rtime,
        })
    }
}

/// Where a subvolume is placed: directory `dirid` of its parent subvolume holds it
/// under `name` at directory index `index`. The value of both `ROOT_BACKREF`
/// `(child, 144, parent)` and `ROOT_REF` `(parent, 156, child)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubvolRef {
    pub dirid: u64,
    pub index: u64,
    pub name: Vec<u8>,
}

impl SubvolRef {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(18 + self.name.len());
        v.extend_from_slice(&self.dirid.to_le_bytes());
        v.extend_from_slice(&self.index.to_le_bytes());
        v.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        v.extend_from_slice(&self.name);
        v
    }

    pub fn decode(id: u64, k: Key, v: &[u8]) -> Result<Self> {
        let mut r = Reader::new(v, id, k);
        let dirid = r.u64()?;
        let index = r.u64()?;
        let len = usize::from(r.u16()?);
        let name = r.bytes(len)?.to_vec();
        if !r.done() {
            return Err(r.fail("trailing bytes after the subvolume reference"));
        }
        if name.is_empty() || name.len() > crate::items::NAME_MAX {
            return Err(r.fail(format!("name of {} bytes", name.len())));
        }
        Ok(Self { dirid, index, name })
    }
}

pub fn root_item_key(id: u64) -> Key {
    key(id, sty::ROOT_ITEM, 0)
}

pub fn backref_key(child: u64, parent: u64) -> Key {
    key(child, sty::ROOT_BACKREF, parent)
}

pub fn ref_key(parent: u64, child: u64) -> Key {
    key(parent, sty::ROOT_REF, child)
}

/// The key of a UUID index item, as btrfs files them: the UUID's two halves,
/// little-endian, as objectid and offset. The value is the subvolume id.
pub fn uuid_key(uuid: &[u8; 16], t: u8) -> Key {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&uuid[..8]);
    hi.copy_from_slice(&uuid[8..]);
    key(u64::from_le_bytes(lo), t, u64::from_le_bytes(hi))
}

pub fn next_id_key() -> Key {
    key(SUBVOL_INFO_OBJECTID, sty::FS_INFO, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_items_and_refs_round_trip_and_reject_damage() {
        let item = SubvolItem {
            flags: SUBVOL_RDONLY,
            uuid: [1; 16],
            parent_uuid: [2; 16],
            received_uuid: [3; 16],
            otransid: 9,
            stransid: 10,
            rtransid: 11,
            otime: Time { sec: 5, nsec: 6 },
            stime: Time { sec: -7, nsec: 8 },
            rtime: Time::default(),
        };
        let k = root_item_key(256);
        let v = item.encode();
        assert_eq!(v.len(), SubvolItem::SIZE);
        assert_eq!(SubvolItem::decode(256, k, &v).unwrap(), item);
        for cut in 0..v.len() {
            assert!(SubvolItem::decode(256, k, &v[..cut]).is_err());
        }
        let mut bad = v.clone();
        bad[0] = 2;
        assert!(SubvolItem::decode(256, k, &bad).is_err());

        let r = SubvolRef {
            dirid: 300,
            index: 4,
            name: b"snap".to_vec(),
        };
        let v = r.encode();
        assert_eq!(SubvolRef::decode(256, k, &v).unwrap(), r);
        for cut in 0..v.len() {
            assert!(SubvolRef::decode(256, k, &v[..cut]).is_err());
        }
    }
}

/// How far the receive of a stream into a subvolume got, while it is unfinished:
/// `RECEIVE_PROGRESS (id, 170, 0)`. Each commit writes it for the state it makes
/// durable, so that after an interruption the receive can resume exactly there; END
/// removes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiveProgress {
    /// The subvolume the stream makes, as the stream names it.
    pub uuid: [u8; 16],
    pub ctransid: u64,
    /// The parent an incremental stream names (zero for a full stream).
    pub parent_uuid: [u8; 16],
    pub parent_ctransid: u64,
    /// Stream version.
    pub version: u32,
    /// Commands applied after the subvol or snapshot command, and a digest of them
    /// (of their kinds and paths), for the sender to check against.
    pub applied: u64,
    pub digest: u32,
    /// The subvolume's generation when this was written: a later one means something
    /// else changed it since, and the receive cannot resume.
    pub generation: u64,
}

impl ReceiveProgress {
    pub const SIZE: usize = 16 + 8 + 16 + 8 + 4 + 8 + 4 + 8;

    pub fn key(id: u64) -> Key {
        key(id, sty::RECEIVE_PROGRESS, 0)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::SIZE);
        v.extend_from_slice(&self.uuid);
        v.extend_from_slice(&self.ctransid.to_le_bytes());
        v.extend_from_slice(&self.parent_uuid);
        v.extend_from_slice(&self.parent_ctransid.to_le_bytes());
        v.extend_from_slice(&self.version.to_le_bytes());
        v.extend_from_slice(&self.applied.to_le_bytes());
        v.extend_from_slice(&self.digest.to_le_bytes());
        v.extend_from_slice(&self.generation.to_le_bytes());
        v
    }

    pub fn decode(id: u64, k: Key, v: &[u8]) -> Result<Self> {
        let mut r = Reader::new(v, id, k);
        let uuid = |r: &mut Reader<'_>| -> Result<[u8; 16]> {
            let mut a = [0u8; 16];
            a.copy_from_slice(r.bytes(16)?);
            Ok(a)
        };
        let p = Self {
            uuid: uuid(&mut r)?,
            ctransid: r.u64()?,
            parent_uuid: uuid(&mut r)?,
            parent_ctransid: r.u64()?,
            version: r.u32()?,
            applied: r.u64()?,
            digest: r.u32()?,
            generation: r.u64()?,
        };
        if !r.done() {
            return Err(r.fail("trailing bytes after the receive progress"));
        }
        Ok(p)
    }
}
