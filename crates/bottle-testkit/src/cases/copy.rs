//! Copies between the host and a bottle: the workspace (`copy_cwd`) into
//! the workdir at launch, a tree in (owned by the agent, with its files'
//! modification times), a tree out (with its times, links left behind), a
//! missing path, and a tree over the limit.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, UNIX_EPOCH};

use bottle_core::ByteSize;
use bottle_core::backend::CopyOut;

use crate::World;
use crate::probe;

/// A time in the past, set on files to see that copies keep it.
const MTIME: u64 = 1_600_000_000;

pub(super) async fn copy_in_and_out(world: &World) {
    std::fs::write(world.path("work/notes.txt"), "from the host\n").expect("write");
    let mut spec = world.spec(world.default_manifest());
    spec.copy_cwd = true;
    let running = world.start(&spec, &[]).await;
    let bottle = running.bottle();
    let notes = probe::ok(bottle, "cat /home/agent/workspace/notes.txt").await;
    assert_eq!(notes, "from the host\n", "the workspace is copied into the workdir");

    // In: a tree with a file in a subfolder, an executable, and times in the past.
    let tree = world.path("work/tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).expect("mkdir");
    std::fs::write(tree.join("a.txt"), "alpha\n").expect("write");
    std::fs::write(tree.join("sub/deeper/c.txt"), "gamma\n").expect("write");
    std::fs::write(tree.join("run.sh"), "#!/bin/sh\necho ran\n").expect("write");
    std::fs::set_permissions(tree.join("run.sh"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for file in ["a.txt", "sub/deeper/c.txt", "run.sh"] {
        let handle = std::fs::File::options().write(true).open(tree.join(file)).expect("open");
        handle.set_modified(UNIX_EPOCH + Duration::from_secs(MTIME)).expect("set the time");
    }
    bottle.cp_in(&tree, "/home/agent/incoming").await.expect("cp_in of a tree");
    let listing = probe::ok(bottle, "cd /home/agent/incoming && find . | sort").await;
    assert_eq!(listing, ".\n./a.txt\n./run.sh\n./sub\n./sub/deeper\n./sub/deeper/c.txt\n", "the whole tree");
    assert_eq!(probe::ok(bottle, "cat /home/agent/incoming/sub/deeper/c.txt").await, "gamma\n");
    let owners = probe::ok(bottle, "stat -c '%U:%G' /home/agent/incoming /home/agent/incoming/sub/deeper/c.txt").await;
    assert_eq!(owners, "agent:agent\nagent:agent\n", "owned by the agent");
    let times = probe::ok(bottle, "cd /home/agent/incoming && stat -c '%Y' a.txt sub/deeper/c.txt run.sh").await;
    assert_eq!(times, format!("{MTIME}\n{MTIME}\n{MTIME}\n"), "the files' modification times are kept");
    assert_eq!(probe::ok(bottle, "/home/agent/incoming/run.sh").await, "ran\n", "and their exec bit");

    // In: one file, to a folder that does not exist yet.
    bottle.cp_in(&tree.join("a.txt"), "/home/agent/new/place/a.txt").await.expect("cp_in of a file");
    assert_eq!(probe::ok(bottle, "cat /home/agent/new/place/a.txt").await, "alpha\n");

    // Out: a tree with a link in it; the link stays behind and is named.
    probe::ok(
        bottle,
        "mkdir -p ~/outgoing/sub && printf x > ~/outgoing/x && printf yy > ~/outgoing/sub/y && \
         ln -s /etc/hostname ~/outgoing/link && touch -d @1600000000 ~/outgoing/x",
    )
    .await;
    let out = world.path("work/out/outgoing");
    let copied = bottle.cp_out("/home/agent/outgoing", &out, ByteSize::mib(1)).await.expect("cp_out of a tree");
    let CopyOut::Copied { bytes, skipped } = copied else { panic!("the tree came out: {copied:?}") };
    assert_eq!(bytes, 3, "its files' content");
    assert_eq!(skipped.len(), 1, "the link stays behind: {skipped:?}");
    assert!(skipped[0].contains("link"), "and is named: {skipped:?}");
    assert_eq!(std::fs::read_to_string(out.join("x")).expect("x"), "x");
    assert_eq!(std::fs::read_to_string(out.join("sub/y")).expect("y"), "yy");
    assert!(std::fs::symlink_metadata(out.join("link")).is_err(), "no link on the host");
    let mtime = std::fs::metadata(out.join("x")).expect("x").modified().expect("mtime");
    assert_eq!(mtime, UNIX_EPOCH + Duration::from_secs(MTIME), "the time comes out too");

    // Out: nothing there; a link alone; over the limit.
    let missing = bottle.cp_out("/home/agent/no-such-thing", &world.path("work/out/missing"), ByteSize::mib(1)).await;
    assert_eq!(missing.expect("cp_out of a missing path"), CopyOut::Missing);
    assert!(!world.path("work/out/missing").exists());
    let link = bottle.cp_out("/home/agent/outgoing/link", &world.path("work/out/link"), ByteSize::mib(1)).await;
    let link = link.expect("cp_out of a link");
    assert!(matches!(&link, CopyOut::NothingKept { skipped } if skipped.len() == 1), "{link:?}");
    assert!(std::fs::symlink_metadata(world.path("work/out/link")).is_err(), "nothing on the host");
    probe::ok(bottle, "head -c 300000 /dev/zero > ~/big").await;
    let limit = ByteSize(100_000);
    let big = bottle.cp_out("/home/agent/big", &world.path("work/out/big"), limit).await.expect("cp_out of big");
    assert_eq!(big, CopyOut::TooLarge { limit });
    assert!(!world.path("work/out/big").exists(), "nothing of it is kept");
    running.teardown().await.expect("teardown");
}
