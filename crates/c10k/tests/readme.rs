//! The README's commands as a newcomer types them, where a test elsewhere runs the same feature
//! with absolute paths only.

mod util;

use std::process::Stdio;

/// "Run your Flask/Django app": `python3 -m venv .venv` in the current directory, then
/// `c10k serve --venv .venv --chdir myproject ... app:app`. The relative `--venv` is the one
/// beside `myproject`, as typed; the worker resolved it after changing into `--chdir`
/// (`myproject/.venv`), so the README's first command stopped with "no bin/python3 in it".
#[test]
fn relative_venv_is_resolved_before_chdir() {
    let Some(venv) = util::python::venv() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // `python3 -m venv .venv && .venv/bin/pip install flask`, made cheaply: the test venv.
    std::os::unix::fs::symlink(&venv, dir.path().join(".venv")).unwrap();
    std::fs::create_dir(dir.path().join("myproject")).unwrap();
    std::fs::write(
        dir.path().join("myproject/app.py"),
        "def app(environ, start_response):\n    \
         start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
         return [b'hello\\n']\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["serve", "--admin", "off", "--check-config"])
        .args(["--venv", ".venv", "--chdir", "myproject"])
        .args(["-k", "gthread", "-w", "4", "--threads", "8", "app:app"])
        .current_dir(dir.path())
        .env_remove("VIRTUAL_ENV")
        .env("C10K_DATA_DIR", dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stderr.contains("loading app:app"), "{stderr}");
}
