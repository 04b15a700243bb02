//! Helper threads that never turn a failed spawn into a panic.
//!
//! The compiler runs independent work on threads of its own (the graph
//! beside the lints, the back ends beside each other, a large file's
//! writing beside its sibling's). Creating a thread can fail (`EAGAIN`
//! under a thread or memory limit: a container's `pids.max`, `ulimit
//! -u`); with `.expect("spawn …")` that was a panic, exit 101, for a
//! program that compiles fine on one thread. Every such thread is made
//! here instead: when the spawn fails, the work runs on the calling
//! thread at once, so the result is the same, only later (every job
//! given to these helpers is a pure function of its inputs, or writes a
//! file of its own; none waits for the spawning thread). On the calling
//! thread a job has that thread's stack, not the size asked for: the
//! graph's recursion needs more than 8 MiB only for chains of several
//! thousand rules, which then overflow instead of compiling.

use std::io;
use std::panic::resume_unwind;
use std::thread::{Builder, JoinHandle, Scope, ScopedJoinHandle};

/// A job started by [`scoped`]: running on its thread, or already done
/// on the calling thread because the spawn failed.
pub enum Scoped<'scope, T> {
    Running(ScopedJoinHandle<'scope, T>),
    Done(T),
}

impl<T> Scoped<'_, T> {
    /// The job's result; a panic on its thread is resumed on this one
    /// (as if the job had run here).
    pub fn join(self) -> T {
        match self {
            Scoped::Running(h) => h.join().unwrap_or_else(|panic| resume_unwind(panic)),
            Scoped::Done(t) => t,
        }
    }
}

/// A job started by [`detached`] (a thread not bound to a scope).
pub enum Detached<T> {
    Running(JoinHandle<T>),
    Done(T),
}

impl<T> Detached<T> {
    /// The job's result (see [`Scoped::join`]).
    pub fn join(self) -> T {
        match self {
            Detached::Running(h) => h.join().unwrap_or_else(|panic| resume_unwind(panic)),
            Detached::Done(t) => t,
        }
    }
}

/// A thread's name and stack size (`None`: the default, 2 MiB).
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    pub name: &'a str,
    pub stack: Option<usize>,
}

impl Spec<'_> {
    fn builder(self) -> Builder {
        let b = Builder::new().name(self.name.into());
        match self.stack {
            Some(n) => b.stack_size(n),
            None => b,
        }
    }
}

/// A thread named `name` with the default stack.
pub fn named(name: &str) -> Spec<'_> {
    Spec { name, stack: None }
}

/// A thread named `name` with `stack` bytes of stack.
pub fn with_stack(name: &str, stack: usize) -> Spec<'_> {
    Spec {
        name,
        stack: Some(stack),
    }
}

/// Runs `f` on a scoped thread of `spec`, or here when the spawn fails.
pub fn scoped<'scope, 'env, T, F>(
    s: &'scope Scope<'scope, 'env>,
    spec: Spec<'_>,
    f: F,
) -> Scoped<'scope, T>
where
    T: Send + 'scope,
    F: FnOnce() -> T + Send + 'scope,
{
    let builder = spec.builder();
    let (handle, f) = try_spawn(f, |job| builder.spawn_scoped(s, job));
    match handle {
        Some(h) => Scoped::Running(h),
        None => Scoped::Done(f()),
    }
}

/// Runs `f` on a thread of `spec` that outlives the caller's borrows
/// (`'static`), or here when the spawn fails.
pub fn detached<T, F>(spec: Spec<'_>, f: F) -> Detached<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let builder = spec.builder();
    let (handle, f) = try_spawn(f, |job| builder.spawn(job));
    match handle {
        Some(h) => Detached::Running(h),
        None => Detached::Done(f()),
    }
}

/// Calls `spawn` with a job that runs `f`. On failure `f` comes back
/// (`spawn` consumes its job, so `f` waits in a slot the job takes it
/// from): `(Some(handle), a no-op)` or `(None, f)`.
fn try_spawn<'a, T, F, H>(
    f: F,
    spawn: impl FnOnce(Box<dyn FnOnce() -> T + Send + 'a>) -> io::Result<H>,
) -> (Option<H>, Box<dyn FnOnce() -> T + 'a>)
where
    T: 'a,
    F: FnOnce() -> T + Send + 'a,
{
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(f)));
    let theirs = std::sync::Arc::clone(&slot);
    let job = Box::new(move || {
        let f = take(&theirs).expect("a job runs once");
        f()
    });
    match spawn(job) {
        Ok(h) => (
            Some(h),
            Box::new(|| unreachable!("the job runs on its thread")),
        ),
        // The job was dropped unrun: `f` is still in the slot.
        Err(_) => {
            let f = take(&slot).expect("the job did not run");
            (None, Box::new(f))
        }
    }
}

fn take<F>(slot: &std::sync::Mutex<Option<F>>) -> Option<F> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn refuse<J>(_: J) -> io::Result<ScopedJoinHandle<'static, ()>> {
        Err(io::Error::from(io::ErrorKind::WouldBlock))
    }

    /// A spawn that fails (what `EAGAIN` under a thread limit returns)
    /// runs the job on the calling thread: same result, no panic.
    #[test]
    fn a_failed_spawn_runs_the_job_here() {
        let here = thread::current().id();
        let (h, f) = try_spawn(
            move || (thread::current().id(), 7),
            |job| {
                drop(job);
                refuse(())
            },
        );
        assert!(h.is_none());
        assert_eq!(f(), (here, 7));
    }

    /// The same through [`scoped`] and [`detached`], with a stack no
    /// machine can give (64 TiB: `spawn` returns an error, nothing
    /// panics; with the fallback made a panic, this test fails on the
    /// development VM). Where the kernel would overcommit even that, the
    /// job runs on its thread: the result is the same either way.
    #[test]
    fn scoped_and_detached_answer_whether_or_not_the_thread_starts() {
        let data = [1, 2, 3];
        let huge = with_stack("weir-test-huge", 1 << 46);
        let sum = thread::scope(|s| scoped(s, huge, || data.iter().sum::<i32>()).join());
        assert_eq!(sum, 6);
        let normal = thread::scope(|s| scoped(s, named("weir-test"), || data.len()).join());
        assert_eq!(normal, 3);
        assert_eq!(detached(huge, || 5).join(), 5);
        assert_eq!(detached(named("weir-test"), || 6).join(), 6);
    }

    #[test]
    fn a_started_job_runs_on_its_thread() {
        let here = thread::current().id();
        let there =
            thread::scope(|s| scoped(s, named("weir-test"), || thread::current().id()).join());
        assert_ne!(there, here);
    }

    /// A panic on the job's thread reaches the joining thread.
    #[test]
    #[should_panic(expected = "boom")]
    fn a_panic_is_resumed_on_join() {
        thread::scope(|s| scoped(s, named("weir-test"), || panic!("boom")).join())
    }
}
