//! Finding the application object from `APP_MODULE`, as gunicorn does: `module:name`, `module`
//! (name `application`), or `module:factory(literal args)` — the factory is called once per
//! worker with arguments evaluated by `ast.literal_eval`, never `eval`. The app found is kept in
//! an [`AppState`], beside what every environ of the worker shares. [`setup`] makes the import
//! find the app (`--pythonpath`, `--chdir`, `--env`).

use std::path::{Path, PathBuf};

use pyo3::exceptions::{PyModuleNotFoundError, PySyntaxError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::boot_error::BootError;
use crate::config::WsgiConfig;
use crate::environ::Template;
use crate::interp;
use crate::traceback::format_exception;

/// The loaded app and what every environ of this worker shares.
pub(crate) struct AppState {
    pub app: Py<PyAny>,
    pub template: Template,
}

/// The parts of an `APP_MODULE`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Spec<'a> {
    pub module: &'a str,
    pub name: &'a str,
    /// The text between the parentheses of a factory call.
    pub args: Option<&'a str>,
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

pub(crate) fn parse(spec: &str) -> Result<Spec<'_>, BootError> {
    let bad = |reason: &str| BootError::Spec {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    let (module, obj) = match spec.split_once(':') {
        Some((m, o)) => (m.trim(), o.trim()),
        None => (spec.trim(), "application"),
    };
    if module.is_empty() || !module.split('.').all(is_identifier) {
        return Err(bad("the module must be a dotted Python name"));
    }
    let (name, args) = match obj.split_once('(') {
        Some((name, rest)) => {
            let Some(args) = rest.strip_suffix(')') else {
                return Err(bad("a factory call must end with ')'"));
            };
            (name.trim(), Some(args))
        }
        None => (obj, None),
    };
    if !is_identifier(name) {
        return Err(bad("the callable must be a Python name"));
    }
    Ok(Spec { module, name, args })
}

/// Why the application could not be loaded.
#[derive(Debug)]
pub(crate) struct Failed {
    pub error: BootError,
    /// Set when a `SyntaxError` (`IndentationError`, `TabError`) was raised: the file it names,
    /// if any. Under `--reload` the worker serves it instead of failing to boot, as gunicorn's.
    pub syntax: Option<Option<PathBuf>>,
}

impl From<BootError> for Failed {
    fn from(error: BootError) -> Failed {
        Failed {
            error,
            syntax: None,
        }
    }
}

/// The file a `SyntaxError` names (`e.filename`), if `e` is one.
fn syntax_error_file(py: Python<'_>, e: &PyErr) -> Option<Option<PathBuf>> {
    if !e.is_instance_of::<PySyntaxError>(py) {
        return None;
    }
    let file = e
        .value(py)
        .getattr_opt("filename")
        .ok()
        .flatten()
        .and_then(|f| f.extract::<Option<PathBuf>>().ok().flatten());
    Some(file)
}

/// Changes to `chdir` (`--chdir`), if given, and returns the directory the app is imported from
/// (the current one after that).
pub(crate) fn enter_dir(chdir: Option<&Path>) -> Result<PathBuf, BootError> {
    if let Some(dir) = chdir {
        std::env::set_current_dir(dir)
            .map_err(|e| BootError::Environment(format!("--chdir {}: {e}", dir.display())))?;
    }
    std::env::current_dir()
        .map_err(|e| BootError::Environment(format!("cannot read the current directory: {e}")))
}

/// Puts the `--pythonpath` directories and then `cwd` (the directory after `--chdir`) in front of
/// `sys.path`, and sets `--env` in `os.environ`: what the app's import needs.
pub(crate) fn setup(py: Python<'_>, config: &WsgiConfig, cwd: &Path) -> PyResult<()> {
    let mut path = config.pythonpath.clone();
    path.push(cwd.to_owned());
    interp::prepend_sys_path(py, &path)?;
    let environ = py.import("os")?.getattr("environ")?;
    for (k, v) in &config.env {
        environ.set_item(k, v)?;
    }
    Ok(())
}

/// Imports the module and returns the callable application.
pub(crate) fn load(py: Python<'_>, spec_text: &str) -> Result<Py<PyAny>, Failed> {
    let spec = parse(spec_text)?;
    let exception = |e: PyErr| Failed {
        syntax: syntax_error_file(py, &e),
        error: BootError::Exception {
            spec: spec_text.to_owned(),
            traceback: format_exception(py, &e),
        },
    };
    let module = match py.import(spec.module) {
        Ok(m) => m,
        Err(e)
            if e.is_instance_of::<PyModuleNotFoundError>(py)
                && missing_is_ours(py, &e, spec.module) =>
        {
            let sys_path = py
                .import("sys")
                .and_then(|s| s.getattr("path"))
                .and_then(|p| p.repr())
                .map(|r| r.to_string())
                .unwrap_or_default();
            return Err(BootError::ModuleNotFound {
                spec: spec_text.to_owned(),
                module: spec.module.to_owned(),
                sys_path,
                traceback: format_exception(py, &e),
            }
            .into());
        }
        Err(e) => return Err(exception(e)),
    };
    let no_attr = || BootError::NoAttribute {
        module: spec.module.to_owned(),
        attr: spec.name.to_owned(),
    };
    let obj = module
        .getattr_opt(spec.name)
        .map_err(exception)?
        .ok_or_else(no_attr)?;
    let app = match spec.args {
        None => obj,
        Some(args) => {
            let (args, kwargs) = literal_args(py, args).map_err(|e| BootError::Spec {
                spec: spec_text.to_owned(),
                reason: format!("factory arguments must be Python literals ({e})"),
            })?;
            obj.call(args, Some(&kwargs)).map_err(exception)?
        }
    };
    if !app.is_callable() {
        return Err(BootError::NotCallable {
            spec: spec_text.to_owned(),
            type_name: app
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default(),
        }
        .into());
    }
    Ok(app.unbind())
}

/// Whether the module that could not be found is the app's own (or a parent package), rather
/// than something the app imports (that is an exception at import, with its own traceback).
fn missing_is_ours(py: Python<'_>, e: &PyErr, module: &str) -> bool {
    let Ok(Some(name)) = e
        .value(py)
        .getattr_opt("name")
        .and_then(|n| n.map(|n| n.extract::<Option<String>>()).transpose())
        .map(Option::flatten)
    else {
        return false;
    };
    module == name || module.starts_with(&format!("{name}."))
}

/// `1, 'x', debug=True` → `((1, 'x'), {'debug': True})`, literals only.
fn literal_args<'py>(
    py: Python<'py>,
    text: &str,
) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
    let ast = py.import("ast")?;
    let literal_eval = ast.getattr("literal_eval")?;
    let call = ast
        .call_method1("parse", (format!("f({text})"), "<APP_MODULE>", "eval"))?
        .getattr("body")?;
    let mut args = Vec::new();
    for a in call.getattr("args")?.try_iter()? {
        args.push(literal_eval.call1((a?,))?);
    }
    let kwargs = PyDict::new(py);
    for k in call.getattr("keywords")?.try_iter()? {
        let k = k?;
        let name = k.getattr("arg")?;
        if name.is_none() {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "**kwargs is not allowed",
            ));
        }
        kwargs.set_item(name, literal_eval.call1((k.getattr("value")?,))?)?;
    }
    Ok((PyTuple::new(py, args)?, kwargs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            parse("pkg.mod:app").unwrap(),
            Spec {
                module: "pkg.mod",
                name: "app",
                args: None
            }
        );
        assert_eq!(
            parse("mysite.wsgi").unwrap(),
            Spec {
                module: "mysite.wsgi",
                name: "application",
                args: None
            }
        );
        assert_eq!(
            parse("m:create_app('x', debug=True)").unwrap(),
            Spec {
                module: "m",
                name: "create_app",
                args: Some("'x', debug=True")
            }
        );
        for bad in ["", ":app", "m:", "m:a.b", "m:f(", "1m:app", "m:app x"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
