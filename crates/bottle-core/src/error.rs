//! The one error type of bot-bottle's libraries: a [`ErrorKind`] the caller can
//! match, the context a user needs (bottle, backend, operation) and the
//! underlying error as `source`.

use std::fmt;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The manifest is invalid; the message lists every `file:line:col` problem.
    Manifest,
    /// A name or value given on the command line or by the caller is unusable.
    InvalidInput,
    /// Something named by the manifest or the caller does not exist.
    NotFound,
    /// A host environment variable the manifest needs is not set.
    MissingHostEnv,
    /// The backend's engine is not installed or not reachable.
    Unavailable,
    /// The backend's engine refused or failed an operation.
    Backend,
    /// A plan or bottle was handed to a backend that did not make it.
    PlanMismatch,
    /// Reading or writing host files (state, stage, workspace) failed.
    Io,
    /// A command inside the bottle failed during provisioning.
    Provision,
    /// The operation was interrupted (Ctrl-C).
    Interrupted,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Manifest => "invalid manifest",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::NotFound => "not found",
            ErrorKind::MissingHostEnv => "missing host variable",
            ErrorKind::Unavailable => "backend unavailable",
            ErrorKind::Backend => "backend error",
            ErrorKind::PlanMismatch => "plan mismatch",
            ErrorKind::Io => "i/o error",
            ErrorKind::Provision => "provisioning failed",
            ErrorKind::Interrupted => "interrupted",
        }
    }
}

/// The error of every bot-bottle library crate.
///
/// Display is one line: `operation [bottle SLUG] [backend NAME]: message`,
/// followed by `: source` when there is one (through [`std::error::Error::source`]).
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    operation: Option<&'static str>,
    bottle: Option<String>,
    backend: Option<&'static str>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` saying `message` (what is wrong and how to fix it).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), operation: None, bottle: None, backend: None, source: None }
    }

    /// Attach the underlying error.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Name the operation that failed ("launch", "exec", "cleanup", …) unless one is set.
    #[must_use]
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        self.operation.get_or_insert(operation);
        self
    }

    /// Name the bottle (its slug) the error concerns unless one is set.
    #[must_use]
    pub fn with_bottle(mut self, slug: impl Into<String>) -> Self {
        if self.bottle.is_none() {
            self.bottle = Some(slug.into());
        }
        self
    }

    /// Name the backend the error came from unless one is set.
    #[must_use]
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.backend.get_or_insert(backend);
        self
    }

    /// Shorthand for an [`ErrorKind::Io`] error about `what` with its source.
    pub fn io(what: impl fmt::Display, source: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, what.to_string()).with_source(source)
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without context or source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The bottle slug, when known.
    pub fn bottle(&self) -> Option<&str> {
        self.bottle.as_deref()
    }

    /// The backend name, when known.
    pub fn backend(&self) -> Option<&'static str> {
        self.backend
    }

    /// Each problem of an invalid manifest (file, line, column, message,
    /// fix), when this is an [`ErrorKind::Manifest`] error.
    pub fn manifest_errors(&self) -> Option<&crate::ManifestErrors> {
        self.source.as_deref()?.downcast_ref::<crate::ManifestErrors>()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut prefix = Vec::new();
        if let Some(op) = self.operation {
            prefix.push(op.to_string());
        }
        if let Some(slug) = &self.bottle {
            prefix.push(format!("bottle {slug}"));
        }
        if let Some(backend) = self.backend {
            prefix.push(format!("backend {backend}"));
        }
        if prefix.is_empty() {
            prefix.push(self.kind.as_str().to_string());
        }
        write!(f, "{}: {}", prefix.join(", "), self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The manifest's problems, listed in the message and kept, structured, as
/// the source ([`Error::manifest_errors`]).
impl From<crate::ManifestErrors> for Error {
    fn from(errors: crate::ManifestErrors) -> Self {
        Error::new(ErrorKind::Manifest, errors.to_string()).with_source(errors)
    }
}
