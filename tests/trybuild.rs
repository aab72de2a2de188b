//! Compile errors of `#[task]`: each case in `tests/ui/` must fail with the message in its
//! `.stderr` file (regenerate with `TRYBUILD=overwrite` and read them).

#[test]
fn task_macro_compile_errors() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
