//! With the `python` feature, the binary finds the libpython it was built against through an rpath,
//! whatever the library search path holds at run time.
fn main() {
    #[cfg(feature = "python")]
    pyo3_build_config::add_libpython_rpath_link_args();
}
