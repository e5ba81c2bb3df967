//! Scrapes share renderings, so memory does not grow with the number of
//! scrapers: a rendering can be hundreds of MiB (10,000 series with long
//! label values), and a slow reader holds its copy until it has read it.
//!
//! Per variant (format, gzip): a scrape that arrives while a rendering is
//! being made waits for it and serves the same bytes (one `Arc`). And at
//! most `MAX_ALIVE` renderings of a variant are alive at once (still being
//! sent to slow readers): past that, a new scrape is served the newest of
//! them instead of a third. Within that cap every scrape gets a rendering
//! made after it arrived or while it waited; the served renderings never go
//! back in time (the newest alive one is the newest made, since a new one
//! is made whenever fewer than `MAX_ALIVE` are alive). So the scrapers of a
//! variant hold at most `MAX_ALIVE` renderings however many they are.
//!
//! Rendering (and compressing) runs on a blocking thread, never on the
//! async workers; it finishes and is published even if the scrape that
//! started it went away.

use super::encoding::Format;
use super::registry::Registry;
use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::watch;

const MAX_ALIVE: usize = 2;
const VARIANTS: usize = 6;

/// One rendering, shared by the responses that send it.
pub struct Rendering {
    body: Vec<u8>,
    /// Where the buffer goes back when the last response is done (plain
    /// renderings: the registry reuses it for the next one).
    recycle: Option<Arc<Registry>>,
}

impl Drop for Rendering {
    fn drop(&mut self) {
        if let Some(registry) = &self.recycle {
            registry.recycle(std::mem::take(&mut self.body));
        }
    }
}

struct Shared(Arc<Rendering>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0.body
    }
}

/// The bytes of a rendering, without copying them.
pub fn bytes_of(rendering: Arc<Rendering>) -> Bytes {
    Bytes::from_owner(Shared(rendering))
}

type Published = Option<Arc<Rendering>>;

#[derive(Default)]
struct Slot {
    in_progress: Option<watch::Receiver<Published>>,
    alive: Vec<Weak<Rendering>>,
}

pub struct Scrapes {
    registry: Arc<Registry>,
    slots: [Mutex<Slot>; VARIANTS],
}

fn variant(format: Format, gzip: bool) -> usize {
    let format = match format {
        Format::Text => 0,
        Format::OpenMetrics => 1,
        Format::Protobuf => 2,
    };
    format * 2 + usize::from(gzip)
}

impl Scrapes {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            slots: Default::default(),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn slot(&self, i: usize) -> MutexGuard<'_, Slot> {
        self.slots[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rendering to serve (see the module doc); `None` if rendering
    /// failed (panicked).
    pub async fn rendering(self: &Arc<Self>, format: Format, gzip: bool) -> Option<Arc<Rendering>> {
        let i = variant(format, gzip);
        let mut rx = {
            let mut slot = self.slot(i);
            if let Some(rx) = &slot.in_progress {
                rx.clone()
            } else {
                let alive: Vec<Arc<Rendering>> =
                    slot.alive.iter().filter_map(Weak::upgrade).collect();
                slot.alive = alive.iter().map(Arc::downgrade).collect();
                if alive.len() >= MAX_ALIVE {
                    return alive.last().cloned();
                }
                let (tx, rx) = watch::channel(None);
                slot.in_progress = Some(rx.clone());
                let me = self.clone();
                tokio::task::spawn_blocking(move || me.render(i, format, gzip, tx));
                rx
            }
        };
        let published = rx.wait_for(Option::is_some).await.ok()?;
        published.clone()
    }

    fn render(&self, i: usize, format: Format, gzip: bool, tx: watch::Sender<Published>) {
        /// Clears the slot also if rendering panics (waiters then see the
        /// sender gone and answer 500).
        struct Done<'a>(&'a Scrapes, usize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.slot(self.1).in_progress = None;
            }
        }
        let done = Done(self, i);
        let body = self.registry.render(format);
        let rendering = if gzip {
            let mut gz =
                GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), Compression::fast());
            gz.write_all(&body).expect("writing to a Vec");
            self.registry.recycle(body);
            Rendering {
                body: gz.finish().expect("writing to a Vec"),
                recycle: None,
            }
        } else {
            Rendering {
                body,
                recycle: Some(self.registry.clone()),
            }
        };
        let rendering = Arc::new(rendering);
        self.slot(i).alive.push(Arc::downgrade(&rendering));
        drop(done);
        tx.send_replace(Some(rendering));
    }
}
