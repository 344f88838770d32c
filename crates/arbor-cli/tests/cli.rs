//! The `arbor` binary as a user runs it: exit statuses, messages, and what it leaves on
//! disk.

use arbor_engine::format::{Body, Expect, Key, RootItem, SUPERBLOCK_SIZE, decode_node, item_type};
use arbor_engine::storage::{FileStorage, Storage};
use arbor_engine::{Config, Engine, read_superblock};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

fn arbor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args(args)
        .output()
        .expect("run arbor")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs arbor and asserts its exit status, printing everything it said otherwise.
fn arbor_expect(args: &[&str], code: i32) -> (String, String) {
    let out = arbor(args);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "arbor {args:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    (stdout, stderr)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn image_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// Makes a 16 MiB image with 4 KiB nodes.
fn mkfs_small(img: &Path) {
    arbor_expect(
        &["mkfs", "--size", "16M", "--nodesize", "4096", path_str(img)],
        0,
    );
}

/// Fills an existing filesystem image: subvolume 256 ("vol") with `files` small files,
/// and its snapshot 257 ("snap") with one of them changed; commits.
fn fill_image(path: &Path, files: u64) {
    let dev = Arc::new(FileStorage::open(path).expect("open image"));
    let fs = arbor_fs::Fs::open(dev, &arbor_fs::FsOptions::default()).expect("open fs");
    let root = arbor_fs::Caller {
        uid: 0,
        gid: 0,
        umask: 0o022,
    };
    let vol = fs.subvol_create(arbor_fs::ROOT_INO, b"vol", root).unwrap();
    for i in 0..files {
        let f = fs
            .create(
                vol.root,
                format!("f{i}").as_bytes(),
                0o100644,
                0,
                root,
                None,
            )
            .unwrap();
        fs.write_file(f.ino, 0, format!("value {i}").as_bytes(), false)
            .unwrap();
    }
    let snap = fs
        .subvol_snapshot(vol.root, arbor_fs::ROOT_INO, b"snap", false)
        .unwrap();
    let f = fs.lookup(snap.root, b"f0").unwrap();
    fs.write_file(f.ino, 0, b"changed", false).unwrap();
    fs.sync().unwrap();
}

/// The root node address of a user tree, found through the superblock and the root
/// tree (assumed to be a single leaf, as it is in these small images).
fn user_tree_root(path: &Path, tree: u64) -> u64 {
    let dev = FileStorage::open_read_only(path).unwrap();
    let (sb, _) = read_superblock(&dev).unwrap();
    let mut buf = vec![0u8; sb.nodesize as usize];
    dev.read_at(sb.root_tree.bytenr, &mut buf).unwrap();
    let expect = Expect {
        bytenr: sb.root_tree.bytenr,
        generation: sb.root_tree.generation,
        level: sb.root_tree.level,
        fsid: &sb.fsid,
        nodesize: sb.nodesize,
        total_bytes: sb.total_bytes,
        lo: None,
        hi: None,
    };
    let node = decode_node(&buf, &expect).expect("root tree root decodes");
    let Body::Leaf(items) = node.body else {
        panic!("the root tree of a small image is one leaf");
    };
    let value = items
        .get(&Key::new(tree, item_type::ROOT_ITEM, 0))
        .expect("root item of the tree");
    RootItem::decode(value).unwrap().root.bytenr
}

fn flip_byte(path: &Path, offset: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x20;
    f.write_all_at(&b, offset).unwrap();
}

/// True when `text` names `block N` exactly (not a longer number starting with N).
fn names_block(text: &str, block: u64) -> bool {
    let needle = format!("block {block}");
    text.match_indices(&needle).any(|(at, _)| {
        !text[at + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

// ---- mkfs --------------------------------------------------------------------------

#[test]
fn mkfs_then_check_reports_a_clean_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    arbor_expect(&["mkfs", "--size", "64M", path_str(&img)], 0);
    assert_eq!(fs::metadata(&img).unwrap().len(), 64 << 20);
    let (out, _) = arbor_expect(&["check", path_str(&img)], 0);
    assert!(out.contains("no problems found"), "{out}");
}

#[test]
fn mkfs_prints_label_uuid_node_size_total_size_and_superblock_copies() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    let (out, _) = arbor_expect(
        &[
            "mkfs",
            "-s",
            "80M",
            "--nodesize",
            "4K",
            "--label",
            "tank",
            path_str(&img),
        ],
        0,
    );
    assert!(out.contains("Label:              tank"), "{out}");
    assert!(out.contains("Node size:          4096"), "{out}");
    assert!(out.contains("(83886080 bytes)"), "{out}");
    assert!(out.contains("Superblock copies:  3"), "{out}");
    let uuid_line = out
        .lines()
        .find(|l| l.starts_with("UUID:"))
        .expect("UUID line");
    let uuid: uuid::Uuid = uuid_line["UUID:".len()..].trim().parse().expect("a UUID");
    let e = Engine::open(
        Arc::new(FileStorage::open_read_only(&img).unwrap()),
        Config {
            read_only: true,
            ..Config::default()
        },
    )
    .unwrap();
    assert_eq!(e.fsid(), uuid);
    assert_eq!(e.label(), "tank");
    assert_eq!(e.nodesize(), 4096);
}

#[test]
fn mkfs_of_a_missing_image_without_size_is_an_error_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    let out = arbor(&["mkfs", path_str(&img)]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("--size"), "{err}");
    assert!(!img.exists());
}

#[test]
fn mkfs_rejects_a_bad_nodesize() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    for bad in ["5000", "2048", "128K", "0", "lots"] {
        let out = arbor(&["mkfs", "--size", "64M", "--nodesize", bad, path_str(&img)]);
        let (_, err) = text(&out);
        assert!(!out.status.success(), "nodesize {bad} was accepted");
        assert!(
            err.contains("node size") || err.contains("invalid size"),
            "{bad}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!img.exists(), "nodesize {bad} left an image behind");
    }
}

#[test]
fn mkfs_rejects_a_label_over_256_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    let long = "x".repeat(257);
    let out = arbor(&["mkfs", "--size", "64M", "--label", &long, path_str(&img)]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("label"), "{err}");
    arbor_expect(
        &[
            "mkfs",
            "--size",
            "64M",
            "--label",
            &"y".repeat(256),
            path_str(&img),
        ],
        0,
    );
}

#[test]
fn mkfs_rejects_a_too_small_image_and_removes_the_file_it_created() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    let out = arbor(&["mkfs", "--size", "512K", path_str(&img)]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("too small"), "{err}");
    assert!(!img.exists());
}

#[test]
fn mkfs_rejects_malformed_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    for bad in ["12Q", "1.1", "M", "--5"] {
        let out = arbor(&["mkfs", &format!("--size={bad}"), path_str(&img)]);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(2), "size {bad}: {err}");
        assert!(err.contains("invalid"), "{bad}: {err}");
    }
    arbor_expect(
        &["mkfs", "--size", "1M", "--nodesize", "4096", path_str(&img)],
        1,
    );
    assert!(!img.exists());
    arbor_expect(
        &[
            "mkfs",
            "--size",
            "2.5M",
            "--nodesize",
            "4096",
            path_str(&img),
        ],
        0,
    );
    assert_eq!(fs::metadata(&img).unwrap().len(), 5 << 19);
}

#[test]
fn mkfs_extends_an_existing_image_to_a_larger_size() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    fs::write(&img, vec![0u8; 4 << 20]).unwrap();
    arbor_expect(&["mkfs", "--size", "32M", path_str(&img)], 0);
    assert_eq!(fs::metadata(&img).unwrap().len(), 32 << 20);
    arbor_expect(&["check", path_str(&img)], 0);
}

#[test]
fn mkfs_of_an_existing_image_without_size_uses_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    fs::write(&img, vec![0u8; 24 << 20]).unwrap();
    let (out, _) = arbor_expect(&["mkfs", path_str(&img)], 0);
    assert!(out.contains(&format!("({} bytes)", 24 << 20)), "{out}");
    arbor_expect(&["check", path_str(&img)], 0);
}

#[test]
fn mkfs_with_a_smaller_size_uses_only_the_start_of_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    fs::write(&img, vec![0u8; 48 << 20]).unwrap();
    let (out, _) = arbor_expect(&["mkfs", "--size", "32M", path_str(&img)], 0);
    assert!(out.contains(&format!("({} bytes)", 32 << 20)), "{out}");
    assert_eq!(fs::metadata(&img).unwrap().len(), 48 << 20);
    arbor_expect(&["check", path_str(&img)], 0);
}

/// Engine bug: `Engine::create` with `total_bytes` below the device size wipes the
/// superblock slot at 64 MiB (beyond the filesystem), and `read_superblock` then reports
/// that zeroed slot as "bad magic", so `check` never passes on such an image.
#[test]
fn mkfs_smaller_than_a_device_with_a_far_superblock_slot_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    arbor_expect(&["mkfs", "--size", "96M", path_str(&img)], 0);
    arbor_expect(&["mkfs", "--size", "32M", path_str(&img)], 0);
    arbor_expect(&["check", path_str(&img)], 0);
}

#[test]
fn mkfs_of_a_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = arbor(&["mkfs", "--size", "64M", path_str(dir.path())]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("arbor: error:"), "{err}");
}

// ---- check -------------------------------------------------------------------------

#[test]
fn check_of_a_missing_image_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "missing.img");
    let (out, err) = arbor_expect(&["check", path_str(&img)], 2);
    assert!(err.contains("missing.img"), "{err}");
    assert!(out.is_empty(), "{out}");
}

#[test]
fn check_without_an_image_argument_is_a_usage_error() {
    arbor_expect(&["check"], 2);
}

#[test]
fn check_of_a_filled_image_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    mkfs_small(&img);
    fill_image(&img, 3000);
    let (out, _) = arbor_expect(&["check", path_str(&img)], 0);
    assert!(out.contains("4 user trees"), "{out}");
}

#[test]
fn check_names_the_corrupt_block_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    mkfs_small(&img);
    fill_image(&img, 3000);
    let before = fs::read(&img).unwrap();

    // A user tree node: snapshot 257's root, found through the root tree.
    let block = user_tree_root(&img, 257);
    flip_byte(&img, block + 100);
    let (out, _) = arbor_expect(&["check", path_str(&img)], 1);
    assert!(names_block(&out, block), "block {block} not named:\n{out}");
    assert!(out.contains("checksum mismatch"), "{out}");
    assert!(out.contains("tree 257"), "{out}");

    // The root tree's root, found through the superblock.
    fs::write(&img, &before).unwrap();
    let sb = read_superblock(&FileStorage::open_read_only(&img).unwrap())
        .unwrap()
        .0;
    flip_byte(&img, sb.root_tree.bytenr + 4000);
    let (out, _) = arbor_expect(&["check", path_str(&img)], 1);
    assert!(
        names_block(&out, sb.root_tree.bytenr),
        "block {} not named:\n{out}",
        sb.root_tree.bytenr
    );
    assert!(out.contains("tree 1"), "{out}");
}

#[test]
fn check_names_a_corrupt_superblock_copy() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    arbor_expect(&["mkfs", "--size", "16M", path_str(&img)], 0);
    flip_byte(&img, (64 << 10) + 40);
    let (out, _) = arbor_expect(&["check", path_str(&img)], 1);
    assert!(out.contains("superblock copy 0"), "{out}");
    // Copy 1 still describes the filesystem, so the trees were checked.
    assert!(out.contains("4 nodes"), "{out}");
}

#[test]
fn check_of_a_file_that_is_not_arbor_reports_no_superblock() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "zeros.img");
    fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let (out, _) = arbor_expect(&["check", path_str(&img)], 1);
    assert!(out.contains("no valid superblock"), "{out}");
    let tiny = image_in(&dir, "tiny.img");
    fs::write(&tiny, b"arbor?").unwrap();
    let (out, _) = arbor_expect(&["check", path_str(&tiny)], 1);
    assert!(out.contains("no valid superblock"), "{out}");
}

#[test]
fn check_does_not_write_to_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    mkfs_small(&img);
    fill_image(&img, 500);
    flip_byte(&img, SUPERBLOCK_SIZE as u64 * 16 + 8);
    let before = fs::read(&img).unwrap();
    arbor_expect(&["check", path_str(&img)], 1);
    assert!(fs::read(&img).unwrap() == before, "check changed the image");
}

#[test]
fn verbose_flags_are_accepted_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    arbor_expect(&["-v", "mkfs", "--size", "16M", path_str(&img)], 0);
    arbor_expect(&["check", "-vv", path_str(&img)], 0);
}

// ---- demo --------------------------------------------------------------------------

#[test]
fn demo_runs_end_to_end() {
    let (out, _) = arbor_expect(&["demo"], 0);
    assert!(
        out.lines().last().unwrap_or("").starts_with("demo OK"),
        "{out}"
    );
    assert!(out.contains("tree 1000 is unchanged"), "{out}");
    assert!(out.contains("no problems found"), "{out}");
}

#[test]
fn demo_keeps_its_image_in_dir_when_asked_and_it_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = arbor_expect(
        &[
            "demo",
            "--dir",
            path_str(dir.path()),
            "--keep",
            "--items",
            "5000",
            "--modify",
            "100",
        ],
        0,
    );
    assert!(out.contains("demo OK"), "{out}");
    let img = dir.path().join("arbor-demo.img");
    assert!(img.exists());
    arbor_expect(&["check", path_str(&img)], 0);

    let other = tempfile::tempdir().unwrap();
    arbor_expect(
        &["demo", "--dir", path_str(other.path()), "--items", "100"],
        1,
    );
    arbor_expect(
        &[
            "demo",
            "--dir",
            path_str(other.path()),
            "--items",
            "100",
            "--modify",
            "10",
        ],
        0,
    );
    assert!(!other.path().join("arbor-demo.img").exists());
}

// ---- subvolume and filesystem, offline (--image) ------------------------------------

#[test]
fn subvolume_commands_work_offline_on_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_in(&dir, "a.img");
    mkfs_small(&img);
    let i = path_str(&img);
    let df = |i: &str| -> serde_json::Value {
        let (out, _) = arbor_expect(
            &["filesystem", "--image", i, "df", "--format", "json", "/"],
            0,
        );
        serde_json::from_str(&out).unwrap()
    };
    let fresh = df(i);
    let (out, _) = arbor_expect(&["subvolume", "--image", i, "create", "/vol"], 0);
    assert_eq!(out, "Create subvolume '/vol'\n");
    arbor_expect(&["subvolume", "create", "--image", i, "/vol/inner"], 0);
    // A directory as DEST means DEST/<name of SOURCE>, as in btrfs: here /vol itself.
    let (_, err) = arbor_expect(
        &["subvolume", "--image", i, "snapshot", "-r", "/vol", "/"],
        1,
    );
    assert!(err.contains("/vol exists"), "{err}");
    arbor_expect(
        &["subvolume", "--image", i, "snapshot", "-r", "/vol", "/snap"],
        0,
    );
    let (out, _) = arbor_expect(&["subvolume", "--image", i, "list", "/"], 0);
    assert_eq!(
        out.lines()
            .map(|l| l.split(" path ").nth(1).unwrap())
            .collect::<Vec<_>>(),
        ["vol", "vol/inner", "snap"],
        "{out}"
    );
    let (out, _) = arbor_expect(
        &["subvolume", "--image", i, "list", "--format", "json", "/"],
        0,
    );
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list[3]["read_only"], true);
    let (out, _) = arbor_expect(&["subvolume", "--image", i, "show", "/snap"], 0);
    assert!(out.starts_with("snap\n"), "{out}");
    assert!(out.contains("Flags: \t\t\treadonly"), "{out}");

    // The read-only flag, as btrfs property.
    let (out, _) = arbor_expect(&["property", "--image", i, "get", "/snap", "ro"], 0);
    assert_eq!(out, "ro=true\n");
    arbor_expect(
        &["property", "--image", i, "set", "/snap", "ro", "false"],
        0,
    );
    let (out, _) = arbor_expect(&["property", "--image", i, "get", "/snap"], 0);
    assert_eq!(out, "ro=false\n");
    arbor_expect(&["property", "--image", i, "set", "/snap", "ro", "true"], 0);
    let (out, _) = arbor_expect(&["property", "--image", i, "get", "/vol/inner/.."], 0);
    assert_eq!(out, "ro=false\n", "the parent of vol/inner is vol's root");
    let (_, err) = arbor_expect(&["property", "--image", i, "set", "/snap", "ro", "yes"], 1);
    assert!(err.contains("true or false"), "{err}");

    // Refusals name the problem.
    let (_, err) = arbor_expect(&["subvolume", "--image", i, "delete", "/vol"], 1);
    assert!(err.contains("directory not empty"), "{err}");
    let (_, err) = arbor_expect(&["subvolume", "--image", i, "create", "/vol"], 1);
    assert!(err.contains("exists"), "{err}");
    let (_, err) = arbor_expect(&["subvolume", "--image", i, "create", "/nowhere/x"], 1);
    assert!(err.contains("/nowhere"), "{err}");

    arbor_expect(
        &[
            "subvolume",
            "--image",
            i,
            "delete",
            "/vol/inner",
            "/vol",
            "/snap",
        ],
        0,
    );
    arbor_expect(&["subvolume", "--image", i, "sync", "/"], 0);
    let after = df(i);
    assert_eq!(after["subvolumes"], 1);
    assert_eq!(after["cleanup_pending_nodes"], 0);
    // Everything made was deleted: df shows what the fresh image showed.
    assert_eq!(after, fresh);
    arbor_expect(&["check", i], 0);
}

#[test]
fn subvolume_commands_outside_a_mount_say_to_use_image() {
    let dir = tempfile::tempdir().unwrap();
    let (_, err) = arbor_expect(&["subvolume", "list", path_str(dir.path())], 1);
    assert!(err.contains("not on a mounted arbor filesystem"), "{err}");
    assert!(err.contains("--image"), "{err}");
}

#[test]
fn send_and_receive_accept_quiet_offline_and_print_only_their_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (image_in(&dir, "a.img"), image_in(&dir, "b.img"));
    let stream = dir.path().join("s.stream");
    mkfs_small(&a);
    mkfs_small(&b);
    let (ia, ib, st) = (path_str(&a), path_str(&b), path_str(&stream));
    arbor_expect(&["subvolume", "--image", ia, "create", "/v"], 0);
    arbor_expect(
        &["subvolume", "--image", ia, "snapshot", "-r", "/v", "/s"],
        0,
    );
    // stderr is not a terminal here: with or without -q, no bar, only the summary.
    for quiet in [&["-q"][..], &["--quiet"], &[]] {
        let mut send = vec!["send", "--image", ia, "-f", st];
        send.extend_from_slice(quiet);
        send.push("/s");
        let (out, err) = arbor_expect(&send, 0);
        assert_eq!(out, "");
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(err.starts_with("At subvol /s: "), "{err:?}");
    }
    let (_, err) = arbor_expect(&["receive", "--image", ib, "-q", "-f", st, "/"], 0);
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.starts_with("received 1 subvolume(s), "), "{err:?}");
    let (out, _) = arbor_expect(&["subvolume", "list", "--image", ib, "/"], 0);
    assert_eq!(
        out.lines()
            .map(|l| l.split(" path ").nth(1).unwrap())
            .collect::<Vec<_>>(),
        ["s"],
        "{out}"
    );
    let (out, err) = arbor_expect(&["receive", "--quiet", "--dump", "-f", st], 0);
    assert!(out.starts_with("subvol"), "{out}");
    assert_eq!(err, "");
    arbor_expect(&["check", ib], 0);
}
