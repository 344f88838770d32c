//! The checks every path in a stream passes before any target sees it.

/// A path's names; refuses absolute paths, empty names, `.` and `..`.
pub(crate) fn components(path: &[u8]) -> Result<Vec<&[u8]>, String> {
    if path.first() == Some(&b'/') {
        return Err(format!("absolute path {}", String::from_utf8_lossy(path)));
    }
    path.split(|&b| b == b'/')
        .map(|c| match c {
            b"" | b"." | b".." => Err(format!(
                "path {} has a {:?} component",
                String::from_utf8_lossy(path),
                String::from_utf8_lossy(c)
            )),
            c => Ok(c),
        })
        .collect()
}

/// The names of `path`, or none for "" (the subvolume's root).
pub(crate) fn names(path: &[u8]) -> Result<Vec<&[u8]>, String> {
    if path.is_empty() {
        Ok(Vec::new())
    } else {
        components(path)
    }
}

/// The directory part and the last name of a path that names something to make or
/// remove (so not the root).
pub(crate) fn split(path: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let parts = components(path)?;
    let Some(name) = parts.last() else {
        return Err("an empty path where a name is needed".into());
    };
    let dir_len = path.len() - name.len();
    let dir = path[..dir_len].strip_suffix(b"/").unwrap_or(&[]);
    Ok((dir, &path[dir_len..]))
}

pub(crate) fn single_name(path: &[u8]) -> Result<&[u8], String> {
    match components(path)?.as_slice() {
        [one] => Ok(one),
        _ => Err(format!(
            "subvolume name {} is not a single name",
            String::from_utf8_lossy(path)
        )),
    }
}

pub(crate) fn hex(u: &[u8; 16]) -> String {
    u.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_gives_the_directory_and_the_last_name() {
        assert_eq!(split(b"a/b/c").unwrap(), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c").unwrap(), (&b""[..], &b"c"[..]));
        assert!(split(b"").is_err());
        assert!(split(b"a/../c").is_err());
        assert!(split(b"/etc/passwd").is_err());
        assert!(split(b"a//c").is_err());
    }
}
