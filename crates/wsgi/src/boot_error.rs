//! [`BootError`]: why the application could not be started (a "worker failed to boot").

/// Why the application could not be started. Each is a "worker failed to boot": the server stops
/// with exit status 3 instead of starting the worker again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    #[error("{0}")]
    Environment(String),
    #[error("cannot start the Python interpreter: {0}")]
    Interpreter(String),
    #[error("bad application spec {spec:?}: {reason} (expected MODULE:CALLABLE, e.g. myapp:app or myapp:create_app())")]
    Spec { spec: String, reason: String },
    #[error("no module named {module:?} (from {spec:?}; sys.path is {sys_path})\n{traceback}")]
    ModuleNotFound {
        spec: String,
        module: String,
        sys_path: String,
        traceback: String,
    },
    #[error("failed to find attribute {attr:?} in module {module:?}")]
    NoAttribute { module: String, attr: String },
    #[error("the application object {spec:?} is not callable (it is a {type_name})")]
    NotCallable { spec: String, type_name: String },
    #[error("exception while loading the application {spec:?}:\n{traceback}")]
    Exception { spec: String, traceback: String },
}
