//! The process-local thread pool.
//!
//! We never use rayon's global pool: its size cannot change after first use and it does not survive
//! `fork()` (PyTorch DataLoader workers fork). Instead every parallel entry point runs inside
//! [`install`], which hands out a pool of the requested size, built lazily and cached per size.
//! A parallel iterator started anywhere else lands on the global pool, and a child forked after
//! the parent started it hangs: `tests/pool_discipline.rs` scans the sources and fails on any
//! rayon entry point (`par_iter`, `par_chunks_mut`, `rayon::join`, ...) that is not inside an
//! `install(...)` call (or inside a function only ever called inside one).
//!
//! Size: the `n_threads` argument when given, else `MCLSTEXP_NUM_THREADS`, else the number of CPUs.
//!
//! Fork safety: a forked child inherits the parent's memory but none of its threads, so the cached
//! pools are dead there. Each cache entry records the process id that built it; when the current pid
//! differs, the whole stale set (with its mutex, which a fork may have caught locked) is leaked and
//! a fresh set is built; dropping the stale pools would signal threads that do not exist.

use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rayon::ThreadPool;

use crate::error::{Error, Result};

/// Environment variable that sets the default pool size.
pub const ENV_NUM_THREADS: &str = "MCLSTEXP_NUM_THREADS";

/// The pools of one process. Published once per process id and never freed.
struct ProcessPools {
    pid: u32,
    by_size: Mutex<HashMap<usize, Arc<ThreadPool>>>,
}

/// Points at the current process's [`ProcessPools`] (null before first use).
static CURRENT: AtomicPtr<ProcessPools> = AtomicPtr::new(std::ptr::null_mut());

/// The pools of this process, creating a fresh set when none exists or the set belongs to the
/// parent of a `fork()` (its mutex may have been inherited locked and its threads do not exist).
fn process_pools() -> &'static ProcessPools {
    let pid = std::process::id();
    loop {
        let seen = CURRENT.load(Ordering::Acquire);
        // SAFETY: every non-null value stored in CURRENT comes from `Box::into_raw` below and is
        // never freed (stale sets are leaked on purpose), so the pointer is valid for 'static and
        // only ever read through shared references (`pid` is immutable, `by_size` is a Mutex).
        if let Some(pools) = unsafe { seen.as_ref() } {
            if pools.pid == pid {
                return pools;
            }
        }
        let fresh = Box::into_raw(Box::new(ProcessPools {
            pid,
            by_size: Mutex::new(HashMap::new()),
        }));
        match CURRENT.compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: `fresh` was just published and, as above, is never freed.
            Ok(_) => return unsafe { &*fresh },
            Err(_) => {
                // Another thread published first; `fresh` was never shared, so we still own it.
                // SAFETY: `fresh` came from `Box::into_raw` above and no one else has seen it.
                drop(unsafe { Box::from_raw(fresh) });
            }
        }
    }
}

fn default_size() -> usize {
    if let Ok(value) = std::env::var(ENV_NUM_THREADS) {
        if let Ok(n) = value.trim().parse::<usize>() {
            if n > 0 {
                return n;
            }
        }
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The number of threads a pool gets for the given request.
pub fn resolve_size(n_threads: Option<usize>) -> Result<usize> {
    match n_threads {
        Some(0) => Err(Error::invalid(
            "n_threads",
            "must be >= 1 (or None for the default)",
        )),
        Some(n) => Ok(n),
        None => Ok(default_size()),
    }
}

fn pool_for(size: usize) -> Result<Arc<ThreadPool>> {
    let pools = process_pools();
    let mut by_size = pools.by_size.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(pool) = by_size.get(&size) {
        return Ok(Arc::clone(pool));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(size)
        .thread_name(|i| format!("mclstexp-{i}"))
        .build()
        .map_err(|e| Error::ThreadPool(e.to_string()))?;
    let pool = Arc::new(pool);
    by_size.insert(size, Arc::clone(&pool));
    Ok(pool)
}

/// Runs `op` inside the process-local pool of the requested size (see module docs).
pub fn install<R: Send>(n_threads: Option<usize>, op: impl FnOnce() -> R + Send) -> Result<R> {
    let pool = pool_for(resolve_size(n_threads)?)?;
    Ok(pool.install(op))
}

/// The size of the pool that `install(None, ..)` would use now.
pub fn current_default_size() -> usize {
    default_size()
}

/// Runs `n_tasks` tasks that each sleep `millis` ms on the pool and returns how many distinct
/// worker threads ran them. A diagnostic for the Python tests (GIL release, fork safety).
pub fn diagnostic_sleep(n_threads: Option<usize>, n_tasks: usize, millis: u64) -> Result<usize> {
    use rayon::prelude::*;
    let names = install(n_threads, || {
        (0..n_tasks)
            .into_par_iter()
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(millis));
                rayon::current_thread_index().unwrap_or(usize::MAX)
            })
            .collect::<std::collections::BTreeSet<_>>()
    })?;
    Ok(names.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_threads_is_an_argument_error() {
        assert!(matches!(
            resolve_size(Some(0)),
            Err(Error::InvalidArgument {
                arg: "n_threads",
                ..
            })
        ));
    }

    #[test]
    fn pool_of_requested_size_runs_work() {
        let n = install(Some(3), rayon::current_num_threads).unwrap_or(0);
        assert_eq!(n, 3);
        // Cached: the same pool comes back.
        let a = pool_for(3).map(|p| Arc::as_ptr(&p) as usize).unwrap_or(0);
        let b = pool_for(3).map(|p| Arc::as_ptr(&p) as usize).unwrap_or(1);
        assert_eq!(a, b);
    }

    #[test]
    fn diagnostic_uses_several_threads() {
        let used = diagnostic_sleep(Some(2), 8, 20).unwrap_or(0);
        assert!((1..=2).contains(&used));
    }
}
