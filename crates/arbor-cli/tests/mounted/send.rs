//! `arbor send` on a mounted filesystem: the daemon writes the stream into the
//! descriptor the command passes; the real `btrfs receive` re-creates the snapshot on a
//! loop-mounted btrfs, identical as rsync sees it (contents, modes, owners, times,
//! hard links, xattrs and ACLs).

use crate::harness::{Mount, arbor, ok};
use std::process::Command;

fn run(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh btrfs in a loop-mounted image file beside the arbor image; returns its
/// mount point (the caller unmounts it).
fn loop_btrfs(m: &Mount) -> std::path::PathBuf {
    let img = m.dir.path().join("b.img");
    let bmnt = m.dir.path().join("btrfs");
    std::fs::create_dir_all(&bmnt).unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    run(Command::new("mkfs.btrfs").arg("-qf").arg(&img));
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&bmnt));
    bmnt
}

/// What rsync sees differ between two trees (contents by checksum, modes, owners, times,
/// hard links, ACLs and xattrs); empty when they are the same.
fn rsync_differences(a: &std::path::Path, b: &std::path::Path) -> String {
    let mut text = String::new();
    for extra in [&["--no-t", "-c"][..], &[][..]] {
        let o = Command::new("rsync")
            .args(["-aHAXn", "-i", "--delete"])
            .args(extra)
            .arg(format!("{}/", a.display()))
            .arg(format!("{}/", b.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        text += &String::from_utf8_lossy(&o.stdout);
    }
    text
}

#[test]
fn btrfs_receive_applies_what_arbor_send_writes_from_a_mount() {
    let m = Mount::new("256M", "");
    let p = |s: &str| m.path(s).to_str().unwrap().to_string();
    ok(
        arbor()
            .args(["subvolume", "create", &p("vol")])
            .output()
            .unwrap(),
        "create",
    );
    let script = format!(
        "set -e; cd {}; mkdir -p a/b c; echo hello > a/b/file1; \
         head -c 200000 /dev/urandom > big; truncate -s 10M sparse; \
         dd if=/dev/urandom of=sparse bs=4096 seek=100 count=2 conv=notrunc status=none; \
         ln -s a/b/file1 sym; ln a/b/file1 hl; mkfifo fifo; mknod blk b 7 200; \
         setfattr -n user.color -v blue a/b/file1; \
         setfacl -m u:1000:rwx c; chmod 4755 big; chown 1000:100 c; \
         touch -d '2020-01-02 03:04:05.123456789' c",
        p("vol")
    );
    run(Command::new("sh").args(["-c", &script]));
    ok(
        arbor()
            .args(["subvolume", "snapshot", "-r", &p("vol"), &p("snap1")])
            .output()
            .unwrap(),
        "snapshot",
    );
    let stream = m.dir.path().join("snap1.stream");
    for proto in ["1", "2"] {
        ok(
            arbor()
                .args(["send", "--proto", proto, "-f"])
                .arg(&stream)
                .arg(m.path("snap1"))
                .output()
                .unwrap(),
            "send",
        );
        run(Command::new("btrfs")
            .args(["receive", "--dump", "-f"])
            .arg(&stream));
        let bmnt = loop_btrfs(&m);
        let received = run(Command::new("btrfs")
            .args(["receive", "-f"])
            .arg(&stream)
            .arg(&bmnt));
        let _ = received;
        let text = rsync_differences(&m.path("snap1"), &bmnt.join("snap1"));
        let _ = Command::new("umount").arg(&bmnt).status();
        assert_eq!(text, "", "proto {proto}: rsync sees differences:\n{text}");
    }
    // A writable subvolume is refused, with the reason.
    let out = arbor()
        .args(["send", "-f"])
        .arg(&stream)
        .arg(m.path("vol"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not read-only"),
        "{out:?}"
    );
}

/// A fresh stream from the kernel's `btrfs send` (on a loop-mounted btrfs) is received
/// natively by `arbor receive` on a mount; rsync sees no difference. Then the received
/// snapshot is sent on by arbor and received by arbor again.
#[test]
fn arbor_receive_applies_a_fresh_kernel_stream_and_sends_it_on() {
    let m = Mount::new("256M", "");
    let bmnt = loop_btrfs(&m);
    let b = |s: &str| bmnt.join(s).to_str().unwrap().to_string();
    run(Command::new("btrfs").args(["subvolume", "create", &b("src")]));
    let script = format!(
        "set -e; cd {}; mkdir -p a/b c; echo hello > a/b/file1; \
         head -c 300000 /dev/urandom > big; truncate -s 10M sparse; \
         dd if=/dev/urandom of=sparse bs=4096 seek=100 count=2 conv=notrunc status=none; \
         ln -s a/b/file1 sym; ln a/b/file1 hl; mkfifo fifo; \
         setfattr -n user.color -v blue a/b/file1; setfacl -m u:1000:rwx c; \
         chmod 4755 big; chown 1000:100 c; touch -d '2020-01-02 03:04:05.123456789' c",
        b("src")
    );
    run(Command::new("sh").args(["-c", &script]));
    run(Command::new("btrfs").args(["subvolume", "snapshot", "-r", &b("src"), &b("snap1")]));
    let stream = m.dir.path().join("kernel.stream");
    run(Command::new("btrfs")
        .args(["send", "-q", "-f"])
        .arg(&stream)
        .arg(b("snap1")));
    let out = arbor()
        .args(["receive", "-f"])
        .arg(&stream)
        .arg(&m.mnt)
        .output()
        .unwrap();
    let diff = rsync_differences(&bmnt.join("snap1"), &m.path("snap1"));
    let show = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args(["subvolume", "show"])
        .arg(m.path("snap1"))
        .output()
        .unwrap();
    let _ = Command::new("umount").arg(&bmnt).status();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(diff, "", "rsync sees differences:\n{diff}");
    let show = String::from_utf8_lossy(&show.stdout).into_owned();
    assert!(show.contains("Flags: \t\t\treadonly"), "{show}");
    assert!(!show.contains("Received UUID: \t\t-"), "{show}");
    let e = std::fs::write(m.path("snap1/new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));

    // arbor → arbor: send the received snapshot on, into a second image, offline.
    let second = m.dir.path().join("second.img");
    ok(
        arbor()
            .args(["mkfs", "-s", "256M"])
            .arg(&second)
            .output()
            .unwrap(),
        "mkfs",
    );
    let again = m.dir.path().join("again.stream");
    ok(
        arbor()
            .args(["send", "-f"])
            .arg(&again)
            .arg(m.path("snap1"))
            .output()
            .unwrap(),
        "send",
    );
    ok(
        arbor()
            .args(["receive", "--image"])
            .arg(&second)
            .args(["-f"])
            .arg(&again)
            .arg("/")
            .output()
            .unwrap(),
        "receive --image",
    );
    let list = ok(
        arbor()
            .args(["subvolume", "list", "--image"])
            .arg(&second)
            .arg("/")
            .output()
            .unwrap(),
        "list",
    );
    assert!(list.contains(" path snap1\n"), "{list}");
    ok(arbor().arg("check").arg(&second).output().unwrap(), "check");
}

/// The files of the incremental tests, then the hard cases between two snapshots:
/// a directory moved into its former descendant, swapped names, a new file in a deleted
/// file's place, links added and removed, a file turned directory, xattrs, a punched
/// hole, owner and mode.
const BEFORE: &str = "mkdir -p a/b d; echo in-b > a/b/f; echo x > x; echo yy > y; \
     echo gone > gone; echo linked > l; ln l l1; echo f > fd; \
     head -c 300000 /dev/urandom > sparse; setfattr -n user.a -v 1 sparse";
const AFTER: &str = "mv a/b b; mv a b/a; mv x t; mv y x; mv t y; rm gone; echo new > gone; \
     rm l1; ln l d/l2; rm fd; mkdir fd; fallocate -p -o 4096 -l 65536 sparse; \
     setfattr -x user.a sparse; setfattr -n user.b -v 2 sparse; chown 1000:100 y; chmod 600 x";

/// Incremental streams both ways: arbor's `send -p` applied by btrfs receive, and the
/// kernel's `btrfs send -p` applied by `arbor receive`; rsync sees no difference.
#[test]
fn incremental_streams_go_both_ways_between_arbor_and_btrfs() {
    let m = Mount::new("256M", "");
    let bmnt = loop_btrfs(&m);
    let sh = |dir: &std::path::Path, script: &str| {
        run(Command::new("sh").args(["-c", &format!("set -e; cd {}; {script}", dir.display())]));
    };
    let arbor_ok = |args: &[&std::ffi::OsStr]| ok(arbor().args(args).output().unwrap(), "arbor");
    let os = |p: &std::path::Path| p.as_os_str().to_owned();

    // arbor → btrfs.
    let a = |s: &str| m.path(s);
    arbor_ok(&[
        "subvolume".as_ref(),
        "create".as_ref(),
        a("vol").as_os_str(),
    ]);
    sh(&a("vol"), BEFORE);
    arbor_ok(&[
        "subvolume".as_ref(),
        "snapshot".as_ref(),
        "-r".as_ref(),
        a("vol").as_os_str(),
        a("p").as_os_str(),
    ]);
    sh(&a("vol"), AFTER);
    arbor_ok(&[
        "subvolume".as_ref(),
        "snapshot".as_ref(),
        "-r".as_ref(),
        a("vol").as_os_str(),
        a("s").as_os_str(),
    ]);
    let full = m.dir.path().join("full.stream");
    let inc = m.dir.path().join("inc.stream");
    arbor_ok(&[
        "send".as_ref(),
        "-f".as_ref(),
        os(&full).as_os_str(),
        a("p").as_os_str(),
    ]);
    arbor_ok(&[
        "send".as_ref(),
        "-p".as_ref(),
        a("p").as_os_str(),
        "-f".as_ref(),
        os(&inc).as_os_str(),
        a("s").as_os_str(),
    ]);
    let into = bmnt.join("from-arbor");
    std::fs::create_dir(&into).unwrap();
    run(Command::new("btrfs")
        .args(["receive", "-f"])
        .arg(&full)
        .arg(&into));
    run(Command::new("btrfs")
        .args(["receive", "-f"])
        .arg(&inc)
        .arg(&into));
    let one = rsync_differences(&a("s"), &into.join("s"));

    // btrfs → arbor.
    let b = |s: &str| bmnt.join(s);
    run(Command::new("btrfs")
        .args(["subvolume", "create"])
        .arg(b("vol")));
    sh(&b("vol"), BEFORE);
    run(Command::new("btrfs")
        .args(["subvolume", "snapshot", "-r"])
        .arg(b("vol"))
        .arg(b("kp")));
    sh(&b("vol"), AFTER);
    run(Command::new("btrfs")
        .args(["subvolume", "snapshot", "-r"])
        .arg(b("vol"))
        .arg(b("ks")));
    run(Command::new("btrfs")
        .args(["send", "-q", "-f"])
        .arg(&full)
        .arg(b("kp")));
    run(Command::new("btrfs")
        .args(["send", "-q", "-p"])
        .arg(b("kp"))
        .arg("-f")
        .arg(&inc)
        .arg(b("ks")));
    arbor_ok(&[
        "receive".as_ref(),
        "-f".as_ref(),
        os(&full).as_os_str(),
        m.mnt.as_os_str(),
    ]);
    let received = arbor()
        .arg("receive")
        .arg("-f")
        .arg(&inc)
        .arg(&m.mnt)
        .output()
        .unwrap();
    let two = rsync_differences(&b("ks"), &a("ks"));
    let _ = Command::new("umount").arg(&bmnt).status();
    assert_eq!(one, "", "arbor → btrfs: rsync sees differences:\n{one}");
    assert!(received.status.success(), "{received:?}");
    assert_eq!(two, "", "btrfs → arbor: rsync sees differences:\n{two}");
}

/// `arbor send -c` through the daemon: data a clone source already holds is sent as
/// clones, and `arbor receive` into the directory holding that source shares it again.
#[test]
fn a_send_with_a_clone_source_clones_through_the_mount() {
    let m = Mount::new("256M", "");
    let p = |s: &str| m.path(s).to_str().unwrap().to_string();
    for args in [
        vec!["subvolume", "create", &p("xv")],
        vec!["subvolume", "create", &p("yv")],
    ] {
        ok(arbor().args(&args).output().unwrap(), "create");
    }
    run(Command::new("sh").args([
        "-c",
        &format!(
            "set -e; head -c 2000000 /dev/urandom > {0}/xv/big; mkdir {0}/recv",
            p("")
        ),
    ]));
    ok(
        arbor()
            .args(["subvolume", "snapshot", "-r", &p("xv"), &p("x")])
            .output()
            .unwrap(),
        "snapshot x",
    );
    // cp uses copy_file_range, which arbor turns into a reflink.
    run(Command::new("cp")
        .arg(m.path("x/big"))
        .arg(m.path("yv/copy")));
    ok(
        arbor()
            .args(["subvolume", "snapshot", "-r", &p("yv"), &p("y")])
            .output()
            .unwrap(),
        "snapshot y",
    );
    let (xs, ys) = (m.dir.path().join("x.stream"), m.dir.path().join("y.stream"));
    ok(
        arbor()
            .args(["send", "-q", "-f"])
            .arg(&xs)
            .arg(m.path("x"))
            .output()
            .unwrap(),
        "send x",
    );
    let out = arbor()
        .args(["send", "-q", "-c"])
        .arg(m.path("x"))
        .arg("-f")
        .arg(&ys)
        .arg(m.path("y"))
        .output()
        .unwrap();
    ok(out.clone(), "send -c");
    let size = std::fs::metadata(&ys).unwrap().len();
    assert!(size < 100_000, "the stream holds the data: {size} bytes");
    let dump = run(Command::new("btrfs")
        .args(["receive", "--dump", "-f"])
        .arg(&ys));
    assert!(dump.contains("clone "), "{dump}");
    for s in [&xs, &ys] {
        ok(
            arbor()
                .args(["receive", "-q", "-f"])
                .arg(s)
                .arg(m.path("recv"))
                .output()
                .unwrap(),
            "receive",
        );
    }
    let text = rsync_differences(&m.path("y"), &m.path("recv/y"));
    assert_eq!(text, "", "rsync sees differences:\n{text}");
}

/// A receive cut short leaves a partial subvolume with a resume token (`receive
/// --resume-token`, `subvolume show`); `send --resume TOKEN` sends only the rest, which
/// `btrfs receive` refuses to apply alone, and `arbor receive` finishes the subvolume.
#[test]
fn an_interrupted_receive_resumes_with_its_token_through_the_mount() {
    let m = Mount::new("256M", "");
    let p = |s: &str| m.path(s).to_str().unwrap().to_string();
    ok(
        arbor()
            .args(["subvolume", "create", &p("vol")])
            .output()
            .unwrap(),
        "create",
    );
    run(Command::new("sh").args([
        "-c",
        &format!(
            "set -e; cd {}; mkdir -p a b ../recv; for i in $(seq 1 40); do \
             head -c $((i * 50000)) /dev/urandom > a/f$i; echo $i > b/s$i; done",
            p("vol")
        ),
    ]));
    ok(
        arbor()
            .args(["subvolume", "snapshot", "-r", &p("vol"), &p("s")])
            .output()
            .unwrap(),
        "snapshot",
    );
    let dir = m.dir.path();
    let (whole, cut, rest) = (dir.join("whole"), dir.join("cut"), dir.join("rest"));
    ok(
        arbor()
            .args(["send", "-q", "-f"])
            .arg(&whole)
            .arg(m.path("s"))
            .output()
            .unwrap(),
        "send",
    );
    let bytes = std::fs::read(&whole).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() * 3 / 5]).unwrap();
    let out = arbor()
        .args(["receive", "-q", "-f"])
        .arg(&cut)
        .arg(m.path("recv"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a cut stream is not received: {out:?}"
    );
    let token = ok(
        arbor()
            .args(["receive", "--resume-token"])
            .arg(m.path("recv"))
            .output()
            .unwrap(),
        "resume-token",
    );
    let token = token.trim().to_string();
    assert_eq!(token.len(), 154, "{token}");
    let show = ok(
        arbor()
            .args(["subvolume", "show"])
            .arg(m.path("recv/s"))
            .output()
            .unwrap(),
        "show",
    );
    assert!(
        show.contains(&format!("Resume token:\t\t{token}")),
        "{show}"
    );
    assert!(!show.contains("readonly"), "{show}");
    ok(
        arbor()
            .args(["send", "-q", "--resume", &token, "-f"])
            .arg(&rest)
            .arg(m.path("s"))
            .output()
            .unwrap(),
        "send --resume",
    );
    let rest_len = std::fs::metadata(&rest).unwrap().len() as usize;
    assert!(
        rest_len < bytes.len() / 2,
        "only the rest is sent: {rest_len} of {}",
        bytes.len()
    );
    let dump = Command::new("btrfs")
        .args(["receive", "--dump", "-f"])
        .arg(&rest)
        .output()
        .unwrap();
    assert!(
        !dump.status.success(),
        "btrfs refuses a stream's tail: {dump:?}"
    );
    ok(
        arbor()
            .args(["receive", "-q", "-f"])
            .arg(&rest)
            .arg(m.path("recv"))
            .output()
            .unwrap(),
        "receive the rest",
    );
    let text = rsync_differences(&m.path("s"), &m.path("recv/s"));
    assert_eq!(text, "", "rsync sees differences:\n{text}");
    let show = ok(
        arbor()
            .args(["subvolume", "show"])
            .arg(m.path("recv/s"))
            .output()
            .unwrap(),
        "show",
    );
    assert!(
        show.contains("readonly") && !show.contains("Resume token"),
        "{show}"
    );
}
