//! `--user`/`--group` (gunicorn's `-u`/`-g`): the master binds as it was started (root, for a
//! port below 1024) and its workers run as the given user.
//!
//! The names are looked up once, in the master; each worker drops to that user between `fork`
//! and `exec` (`setgroups`, `setgid`, `setuid`: plain system calls, safe there), so the
//! application never runs a line as root. As gunicorn does for its log files, the files the
//! workers open themselves (the access log, the error log) and the unix sockets are given to
//! that user, so they can still be written and reached.

use std::ffi::{CStr, CString};

/// Who workers run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the user's groups in the group database (what a login, `su` and
    /// systemd's `User=` give).
    pub groups: Vec<u32>,
}

/// Looks up `--user` and `--group` (names or numbers). `None` when neither is given. Without
/// `--group` the user's primary group is used.
pub fn resolve(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<Owner>, (&'static str, String)> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let gid_of_group = match group {
        None => None,
        Some(g) => Some(match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_id(g).ok_or_else(|| ("--group", format!("{g}: no such group")))?,
        }),
    };
    let Some(user) = user else {
        // Only a group: the workers keep the master's user.
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let gid = gid_of_group.unwrap_or_default();
        return Ok(Some(Owner {
            uid,
            gid,
            groups: vec![gid],
        }));
    };
    let entry = match user.parse::<u32>() {
        Ok(n) => passwd_by_uid(n),
        Err(_) => {
            Some(passwd_by_name(user).ok_or_else(|| ("--user", format!("{user}: no such user")))?)
        }
    };
    let (uid, primary, name) = match entry {
        Some(e) => e,
        None => {
            let uid: u32 = user.parse().unwrap_or_default();
            let gid = gid_of_group.ok_or_else(|| {
                (
                    "--user",
                    format!("{user}: no such user in the user database; give --group too"),
                )
            })?;
            return Ok(Some(Owner {
                uid,
                gid,
                groups: vec![gid],
            }));
        }
    };
    let gid = gid_of_group.unwrap_or(primary);
    let mut groups = group_list(&name, gid);
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    Ok(Some(Owner { uid, gid, groups }))
}

/// Whether this process may switch to `owner` (root may; anyone may "switch" to themselves).
pub fn can_switch(owner: &Owner) -> bool {
    // SAFETY: geteuid/getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    euid == 0 || (owner.uid == euid && owner.gid == egid)
}

/// Becomes `owner`; called in a forked child before `exec` (system calls only, no allocation).
pub(crate) fn switch(owner: &Owner) -> std::io::Result<()> {
    // SAFETY: plain system calls on values we own; each result is checked.
    unsafe {
        if libc::geteuid() == 0
            && libc::setgroups(owner.groups.len() as _, owner.groups.as_ptr()) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if libc::setgid(owner.gid) != 0 || libc::setuid(owner.uid) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Gives `path` to `owner` (a log file the workers open, a unix socket).
pub(crate) fn give(path: &std::path::Path, owner: &Owner) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
}

const BUF: usize = 1 << 16;

fn passwd_by_name(name: &str) -> Option<(u32, u32, String)> {
    let cname = CString::new(name).ok()?;
    passwd(|pwd, buf, result| {
        // SAFETY: valid pointers to a passwd, a buffer of BUF bytes and a result slot.
        unsafe { libc::getpwnam_r(cname.as_ptr(), pwd, buf.as_mut_ptr(), BUF, result) }
    })
}

fn passwd_by_uid(uid: u32) -> Option<(u32, u32, String)> {
    passwd(|pwd, buf, result| {
        // SAFETY: as in passwd_by_name.
        unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), BUF, result) }
    })
}

fn passwd(
    call: impl FnOnce(&mut libc::passwd, &mut [libc::c_char], &mut *mut libc::passwd) -> i32,
) -> Option<(u32, u32, String)> {
    // SAFETY: passwd is plain data; all-zero is a valid (empty) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; BUF];
    let mut result = std::ptr::null_mut();
    if call(&mut pwd, &mut buf, &mut result) != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a C string inside buf.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) }
        .to_string_lossy()
        .into_owned();
    Some((pwd.pw_uid, pwd.pw_gid, name))
}

fn group_id(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    // SAFETY: group is plain data; all-zero is a valid (empty) value.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; BUF];
    let mut result = std::ptr::null_mut();
    // SAFETY: valid pointers to a group, a buffer of BUF bytes and a result slot.
    let rc =
        unsafe { libc::getgrnam_r(cname.as_ptr(), &mut grp, buf.as_mut_ptr(), BUF, &mut result) };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}

fn group_list(user: &str, gid: u32) -> Vec<u32> {
    let Ok(cname) = CString::new(user) else {
        return vec![gid];
    };
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let asked = n;
        // SAFETY: groups has room for n entries; n is updated to the number found.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            return groups;
        }
        if n <= asked {
            n = asked * 2;
        }
        if n > 65536 {
            return vec![gid];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(resolve(None, None), Ok(None));
        let root = resolve(Some("root"), None).unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        let by_number = resolve(Some("0"), Some("0")).unwrap().unwrap();
        assert_eq!((by_number.uid, by_number.gid), (0, 0));
        let e = resolve(Some("no-such-user-c10k"), None).unwrap_err();
        assert_eq!(e, ("--user", "no-such-user-c10k: no such user".into()));
        let e = resolve(Some("root"), Some("no-such-group-c10k")).unwrap_err();
        assert_eq!(e, ("--group", "no-such-group-c10k: no such group".into()));
        let e = resolve(Some("4000000"), None).unwrap_err();
        assert!(e.1.contains("give --group too"), "{e:?}");
        let numeric = resolve(Some("4000000"), Some("4000000")).unwrap().unwrap();
        assert_eq!((numeric.uid, numeric.gid), (4_000_000, 4_000_000));
    }
}
