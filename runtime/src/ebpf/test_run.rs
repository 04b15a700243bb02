//! BPF_PROG_TEST_RUN with many repetitions, retried when interrupted.
//!
//! The kernel checks for a pending signal between repetitions and ends
//! the run with `EINTR` when it finds one (`bpf_test_timer_continue`), so
//! a long measuring run (a million repetitions) can fail for a signal
//! meant for someone else. A run of one repetition never checks. The
//! measuring code (weir-bench, the kernel tests that print ns per packet)
//! runs its programs through [`repeat`], which runs the program again on
//! `EINTR`; any other error is returned as it is.

use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, TestRunResult};

/// How many interrupted runs in a row before giving up.
const ATTEMPTS: usize = 5;

/// Runs `p` on `data_in` `repeat` times (output into `data_out`),
/// retrying a run the kernel interrupted.
pub fn repeat(
    p: &SchedClassifier,
    data_in: &[u8],
    data_out: &mut [u8],
    repeat: u32,
) -> Result<TestRunResult, ProgramError> {
    let mut attempt = 1;
    loop {
        let opts = TestRunOptions {
            data_in: Some(data_in),
            data_out: Some(&mut *data_out),
            repeat,
            ..Default::default()
        };
        match p.test_run(opts) {
            Err(e) if interrupted(&e) && attempt < ATTEMPTS => attempt += 1,
            r => return r,
        }
    }
}

fn interrupted(e: &ProgramError) -> bool {
    matches!(e, ProgramError::SyscallError(s) if s.io_error.kind() == std::io::ErrorKind::Interrupted)
}
