//! Runtime errors. Each one names the thing that is missing or the step that
//! failed, with the tool's own message, so an operator can act on it.

use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// A program the back end runs is not installed.
    MissingProgram {
        program: String,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// We are not allowed to change the kernel's network configuration.
    NotPrivileged { detail: String },
    /// The kernel lacks a module (or it cannot be loaded) for something the
    /// bundle uses.
    MissingKernelModule {
        module: String,
        step: String,
        stderr: String,
    },
    /// The network namespace asked for does not exist.
    NoNetns { name: String, source: io::Error },
    /// The bundle directory is unreadable or not what the runtime expects.
    Bundle { path: PathBuf, message: String },
    /// A program ran and failed.
    Step {
        step: String,
        program: String,
        stderr: String,
    },
    /// The state file is unreadable or inconsistent.
    State { path: PathBuf, message: String },
    /// Some other IO failure.
    Io { context: String, source: io::Error },
    /// A redirect proxy of the bundle is at an address this host does
    /// not hold (E0570, [`crate::proxy_local`]).
    ProxyNotOnHost(crate::proxy_local::NotOnHost),
}

impl From<crate::proxy_local::CheckError> for Error {
    fn from(e: crate::proxy_local::CheckError) -> Error {
        match e {
            crate::proxy_local::CheckError::NotOnHost(n) => Error::ProxyNotOnHost(n),
            crate::proxy_local::CheckError::Io { context, source } => Error::Io { context, source },
        }
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn bundle(path: impl Into<PathBuf>, message: impl Into<String>) -> Error {
        Error::Bundle {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The step that failed, for errors that come from running a step.
    pub fn step(&self) -> Option<&str> {
        match self {
            Error::Step { step, .. } | Error::MissingKernelModule { step, .. } => Some(step),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MissingProgram { program, package } => write!(
                f,
                "`{program}` is not installed (install the Debian package `{package}`, \
                 e.g. `apt-get install -y {package}`)"
            ),
            Error::NotPrivileged { detail } => write!(
                f,
                "not privileged: changing iptables rules and ipsets needs root \
                 (CAP_NET_ADMIN): {detail}"
            ),
            Error::MissingKernelModule {
                module,
                step,
                stderr,
            } => write!(
                f,
                "{step} failed: the kernel lacks module `{module}` (try `modprobe {module}`): {}",
                stderr.trim()
            ),
            Error::NoNetns { name, source } => {
                write!(f, "network namespace `{name}` does not exist: {source}")
            }
            Error::Bundle { path, message } => {
                write!(f, "bundle {}: {message}", path.display())
            }
            Error::Step {
                step,
                program,
                stderr,
            } => write!(f, "{step} failed ({program}): {}", stderr.trim()),
            Error::State { path, message } => {
                write!(f, "state file {}: {message}", path.display())
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::ProxyNotOnHost(n) => n.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::NoNetns { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
