//! Noticing that files changed, for what MCA reads from files that are replaced while it runs:
//! credentials (the kubelet rotates a projected ServiceAccount token about hourly, and revokes
//! the old one when the ServiceAccount is recreated; cert-manager renews certificates in
//! Secrets) and the routing configuration.
//!
//! The kubelet updates a Secret, ConfigMap or projected volume by writing a new timestamped
//! directory and renaming a `..data` symlink onto it; the names the application reads are
//! symlinks through `..data` and never change themselves. So MCA watches the *directory* that
//! holds each file (inotify), and on any change there the subscriber re-reads its files and
//! compares their contents.
//!
//! One inotify instance and one small thread serve the whole process: instances are limited
//! per user (`fs.inotify.max_user_instances`, 128 by default) and shared by every container on
//! the node running as that user, while MCA may watch files for many clusters. The thread
//! blocks in `read` and wakes subscribers through [`Notify`], so it works with any runtime.
//! Where inotify is unavailable, or while a watched directory is missing, subscribers are
//! woken every second instead.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock, Mutex, MutexGuard, Once},
    time::Duration,
};

use nix::{
    errno::Errno,
    sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor},
};
use tokio::sync::Notify;

/// How often subscribers are woken when inotify cannot tell them.
const POLL: Duration = Duration::from_secs(1);

/// What changes a directory in a way a reader of its files may see: a file written and
/// closed, created (a symlink), renamed in (`..data`, or `mv new token`), removed, or its
/// permissions changed. Not `IN_MODIFY`: a file being written is not ready to be read.
const EVENTS: AddWatchFlags = AddWatchFlags::IN_CLOSE_WRITE
    .union(AddWatchFlags::IN_CREATE)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_ONLYDIR);

/// Interest in the directories holding some files. Dropping it ends the interest.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    dirs: Vec<PathBuf>,
    notify: Arc<Notify>,
}

impl Subscription {
    /// Subscribes to changes in the directories holding `files`. The first
    /// [`changed`](Self::changed) returns at once, so a subscriber that read its files before
    /// subscribing misses nothing in between.
    pub fn new<P: AsRef<Path>>(files: &[P]) -> Self {
        let mut dirs: Vec<PathBuf> = files.iter().map(|file| directory(file.as_ref())).collect();
        dirs.sort();
        dirs.dedup();
        let notify = Arc::new(Notify::new());
        notify.notify_one();
        let watcher = &*WATCHER;
        let id = watcher.subscribe(&dirs, &notify);
        Self { id, dirs, notify }
    }

    /// Waits until something may have changed since the last call.
    pub async fn changed(&self) {
        if WATCHER.watching(&self.dirs) {
            self.notify.notified().await;
        } else {
            tokio::select! {
                () = self.notify.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        WATCHER.unsubscribe(self.id, &self.dirs);
    }
}

/// The directory whose entries name `file`.
fn directory(file: &Path) -> PathBuf {
    let parent = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // One watch per directory however it is spelled (`/var/run` is often `/run`).
    parent.canonicalize().unwrap_or_else(|_| parent.to_owned())
}

static WATCHER: LazyLock<Watcher> = LazyLock::new(Watcher::new);

struct Watcher {
    /// `None` where inotify is unavailable: subscribers poll.
    inotify: Option<Inotify>,
    state: Mutex<State>,
    reader: Once,
}

#[derive(Default)]
struct State {
    dirs: HashMap<PathBuf, Dir>,
    next_id: u64,
}

struct Dir {
    /// `None` while the directory cannot be watched (missing, or removed since).
    watch: Option<WatchDescriptor>,
    subscribers: Vec<(u64, Arc<Notify>)>,
}

impl Watcher {
    fn new() -> Self {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC)
            .inspect_err(|error| {
                tracing::warn!(%error, "inotify is unavailable; checking files every second");
            })
            .ok();
        Self {
            inotify,
            state: Mutex::default(),
            reader: Once::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subscribe(&'static self, dirs: &[PathBuf], notify: &Arc<Notify>) -> u64 {
        self.reader.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("mca-watch".into())
                .stack_size(64 * 1024)
                .spawn(|| self.read_forever());
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start the file watcher; checking files every second");
            }
        });
        let mut state = self.lock();
        state.next_id += 1;
        let id = state.next_id;
        for path in dirs {
            let dir = state.dirs.entry(path.clone()).or_insert_with(|| Dir {
                watch: None,
                subscribers: Vec::new(),
            });
            dir.subscribers.push((id, Arc::clone(notify)));
        }
        drop(state);
        self.watching(dirs);
        id
    }

    fn unsubscribe(&self, id: u64, dirs: &[PathBuf]) {
        let mut state = self.lock();
        for path in dirs {
            let Some(dir) = state.dirs.get_mut(path) else {
                continue;
            };
            dir.subscribers.retain(|(subscriber, _)| *subscriber != id);
            if dir.subscribers.is_empty() {
                if let (Some(inotify), Some(watch)) = (&self.inotify, dir.watch) {
                    // Fails only if the directory went away, which removed the watch already.
                    let _ = inotify.rm_watch(watch);
                }
                state.dirs.remove(path);
            }
        }
    }

    /// Whether inotify watches every one of `dirs`, (re)adding the watches it can. A
    /// directory watched again may have changed while it was not: its subscribers are woken.
    fn watching(&self, dirs: &[PathBuf]) -> bool {
        let Some(inotify) = &self.inotify else {
            return false;
        };
        let mut state = self.lock();
        let mut all = true;
        for path in dirs {
            let Some(dir) = state.dirs.get_mut(path) else {
                continue;
            };
            if dir.watch.is_none() {
                dir.watch = inotify.add_watch(path.as_path(), EVENTS).ok();
                if dir.watch.is_some() {
                    dir.wake();
                }
            }
            all &= dir.watch.is_some();
        }
        all
    }

    fn read_forever(&self) {
        let Some(inotify) = &self.inotify else {
            return;
        };
        loop {
            match inotify.read_events() {
                Ok(events) => self.dispatch(&events),
                Err(Errno::EINTR) => {}
                Err(error) => {
                    tracing::warn!(%error, "reading inotify events failed; checking files every second");
                    self.lock()
                        .dirs
                        .values_mut()
                        .for_each(|dir| dir.watch = None);
                    return;
                }
            }
        }
    }

    fn dispatch(&self, events: &[InotifyEvent]) {
        let mut state = self.lock();
        for event in events {
            let Some(dir) = state.dirs.values_mut().find(|d| d.watch == Some(event.wd)) else {
                continue;
            };
            if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                // The directory is gone; subscribers poll until it is back.
                dir.watch = None;
            }
            dir.wake();
        }
    }
}

impl Dir {
    fn wake(&self) {
        for (_, notify) in &self.subscribers {
            notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits for the next change, failing after a while.
    async fn next(subscription: &Subscription) {
        tokio::time::timeout(Duration::from_secs(5), subscription.changed())
            .await
            .expect("a change is reported");
    }

    /// Whether no change is reported for `time`.
    async fn quiet_for(time: Duration, subscription: &Subscription) -> bool {
        tokio::time::timeout(time, subscription.changed())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_kubelet_style_symlink_swap_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..v1")).unwrap();
        std::fs::write(root.join("..v1/token"), "one").unwrap();
        std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/token", root.join("token")).unwrap();

        let subscription = Subscription::new(&[root.join("token")]);
        next(&subscription).await; // the first call returns at once
        assert!(quiet_for(Duration::from_millis(200), &subscription).await);

        // What the kubelet's atomic writer does.
        std::fs::create_dir(root.join("..v2")).unwrap();
        std::fs::write(root.join("..v2/token"), "two").unwrap();
        std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        next(&subscription).await;
        assert_eq!(std::fs::read_to_string(root.join("token")).unwrap(), "two");
    }

    #[tokio::test]
    async fn writes_and_renames_are_reported_to_every_subscriber() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "one").unwrap();
        let first = Subscription::new(&[&file]);
        let second = Subscription::new(&[&file]);
        for subscription in [&first, &second] {
            next(subscription).await;
        }
        std::fs::write(&file, "two").unwrap();
        for subscription in [&first, &second] {
            next(subscription).await;
        }
        drop(second);
        std::fs::write(dir.path().join("new"), "three").unwrap();
        std::fs::rename(dir.path().join("new"), &file).unwrap();
        next(&first).await;
    }

    #[tokio::test]
    async fn a_directory_that_reappears_is_watched_again() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let subscription = Subscription::new(&[sub.join("token")]);
        next(&subscription).await;
        std::fs::remove_dir(&sub).unwrap();
        next(&subscription).await;
        // Gone: polled, so `changed` returns within about a second.
        next(&subscription).await;
        std::fs::create_dir(&sub).unwrap();
        // Watched again, which is reported (its files may have changed meanwhile); then quiet
        // (for longer than the poll) until a change.
        next(&subscription).await;
        assert!(quiet_for(2 * POLL, &subscription).await, "still polling");
        std::fs::write(sub.join("token"), "back").unwrap();
        next(&subscription).await;
    }
}
