//! renderfleet's built-in renderer (`builtin`): Minecraft Java Edition 1.18+ worlds drawn top-down,
//! one 512x512 tile per region, a zoom pyramid above them and a self-contained viewer page.
//!
//! Pure file work, no Redis: the agent runs it in a child process (`renderfleet-agent map ...`), one
//! region per task, so a world's regions spread over the fleet through the ordinary job queue.

pub mod output;
pub mod palette;
pub mod region;
pub mod render;
pub mod sample;
pub mod tile;

pub use output::{Action, Plan, RegionId};

/// Run `f` on every item, `threads` at a time (at least one), each worker thread taking the next
/// item as it frees up. Returns the errors, in no particular order; every item is tried.
pub fn for_each_parallel<T: Sync, E: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<(), E> + Sync,
) -> Vec<E> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let errors = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.min(items.len()).max(1) {
            s.spawn(|| {
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if let Err(e) = f(item) {
                        if let Ok(mut errs) = errors.lock() {
                            errs.push(e);
                        }
                    }
                }
            });
        }
    });
    errors.into_inner().unwrap_or_default()
}

/// The number of cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
